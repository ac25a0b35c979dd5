"""The noise math: projection, perturbation, sign-gradient PGD and release.

All functions are pure and take their hyperparameters as keyword arguments.
Images are float32 in [0, 1] unless named `*_u8`; noise is the signed
perturbation delta (not x + delta), in the same [0, 1] units.
"""

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np


MAX_UNROLL = 32  # on CPU, longer PGD runs unroll in chunks of this many
# How a noise is indexed: one row per example (by its index) or one row per
# class (by its label); core/steps.py and training/layouts.py read it.
LAYOUTS = ("samplewise", "classwise")


def samplewise(layout: str) -> bool:
  """Whether a noise of `layout` has one row per example, keyed by its index
  (on a mesh: sharded by rows, padded to a multiple of the device count);
  else one row per class, keyed by its label (replicated, unpadded)."""
  return layout != "classwise"


def noise_row(layout: str, index: int, label: int) -> int:
  """The noise row of one example: its index (sample-wise) or its label."""
  return index if samplewise(layout) else label


def project(delta: jax.Array, x: jax.Array, *, eps: float) -> jax.Array:
  """Projects delta onto {d : |d| <= eps, 0 <= x + d <= 1} (idempotent)."""
  return jnp.clip(x + jnp.clip(delta, -eps, eps), 0.0, 1.0) - x


def perturb(x: jax.Array, delta: jax.Array) -> jax.Array:
  """The image the model sees: clip(x + delta, 0, 1)."""
  return jnp.clip(x + delta, 0.0, 1.0)


def unroll_length(num_steps: int, platform: Optional[str] = None) -> int:
  """PGD steps per iteration of its lax.scan: all of them (in chunks of
  MAX_UNROLL) on CPU, 1 (a rolled loop) on any other platform.

  XLA:CPU runs convolutions inside a rolled while-loop about 7x slower
  (measured: 217 vs 1664 image-steps/s, width-16 ResNet, batch 128), so
  there the steps are copied into the program; elsewhere the copies only
  lengthen compilation (REM inside EOT would hold hundreds). `platform` is
  the one the step runs on ("cpu", "gpu", "tpu"); None takes JAX's default
  backend when the step is traced."""
  platform = platform or jax.default_backend()
  return min(num_steps, MAX_UNROLL) if platform == "cpu" else 1


def pgd(loss_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
        delta: jax.Array, *, eps: float, step_size: float, num_steps: int,
        maximize: bool = False, platform: Optional[str] = None,
        subspace: Optional[Callable[[jax.Array], jax.Array]] = None
        ) -> jax.Array:
  """`num_steps` signed-gradient steps on delta from a warm start.

  `loss_fn(images) -> scalar` must be a sum (or mean) of per-example losses,
  so each example's input gradient depends on that example only. Descent
  (error-minimizing) by default; `maximize=True` gives error-maximizing noise.
  The loop is unrolled on CPU only (`unroll_length`; `platform`: the one the
  step runs on, None = JAX's default backend). `subspace` (a noise form's
  projection, `form_projection`) is applied to the start and to every
  gradient before its sign; None, the paper's PGD.
  """
  sign = 1.0 if maximize else -1.0
  grad_fn = jax.grad(loss_fn)
  within = subspace or (lambda a: a)

  def body(d, _):
    g = within(grad_fn(perturb(x, d)))
    return project(d + sign * step_size * jnp.sign(g), x, eps=eps), None

  delta, _ = jax.lax.scan(body, project(within(delta), x, eps=eps), None,
                          length=num_steps,
                          unroll=unroll_length(num_steps, platform))
  return delta


def pgd_eot(loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
            x: jax.Array, delta: jax.Array, key: jax.Array, *, eps: float,
            step_size: float, num_steps: int, maximize: bool = False,
            platform: Optional[str] = None,
            subspace: Optional[Callable[[jax.Array], jax.Array]] = None
            ) -> jax.Array:
  """`pgd` on a random objective: step t follows the gradient of
  `loss_fn(images, fold_in(key, t))` (e.g. the loss averaged over random
  augmentations drawn from that key: expectation over transformations).
  Unrolled on CPU only, and `subspace` as in `pgd`."""
  sign = 1.0 if maximize else -1.0
  grad_fn = jax.grad(loss_fn)
  within = subspace or (lambda a: a)

  def body(d, t):
    g = within(grad_fn(perturb(x, d), jax.random.fold_in(key, t)))
    return project(d + sign * step_size * jnp.sign(g), x, eps=eps), None

  delta, _ = jax.lax.scan(body, project(within(delta), x, eps=eps),
                          jnp.arange(num_steps),
                          unroll=unroll_length(num_steps, platform))
  return delta


# ------------------------------------------------------------ noise forms
# The subspace the error-minimizing noise lives in (noise.form): "rgb", any
# array (the paper's); "luma", one value per pixel shared by its channels,
# which a grayscale conversion keeps exactly (the BT.601 weights sum to 1);
# "lowfreq", one value per `block` x `block` pixels per channel, whose
# energy sits in the low frequencies JPEG quantizes least; "luma_lowfreq",
# both.
FORMS = ("rgb", "luma", "lowfreq", "luma_lowfreq")


def channel_mean(a: jax.Array) -> jax.Array:
  """Each pixel's mean over its channels, in every channel ([..., C])."""
  return jnp.broadcast_to(jnp.mean(a, axis=-1, keepdims=True), a.shape)


def block_mean(a: jax.Array, block: int) -> jax.Array:
  """Each `block` x `block` block's mean per channel, in every pixel of the
  block ([..., H, W, C]); blocks tile from the top-left corner and the last
  row and column of blocks are cut at the border (their means over the
  pixels they hold)."""
  if block == 1:
    return a
  *lead, h, w, c = a.shape
  gh, gw = -(-h // block), -(-w // block)
  pad = [(0, 0)] * len(lead) + [(0, gh * block - h), (0, gw * block - w),
                                (0, 0)]
  grid = (*lead, gh, block, gw, block, c)
  axes = (len(lead) + 1, len(lead) + 3)
  sums = jnp.sum(jnp.pad(a, pad).reshape(grid), axis=axes)
  counts = np.pad(np.ones((h, w)), pad[-3:-1]).reshape(
      gh, block, gw, block).sum(axis=(1, 3))[..., None]
  means = sums / jnp.asarray(counts, a.dtype)
  axis = len(lead)
  full = jnp.repeat(jnp.repeat(means, block, axis), block, axis + 1)
  return full[..., :h, :w, :]


def form_projection(form: str, block: int = 4
                    ) -> Optional[Callable[[jax.Array], jax.Array]]:
  """The orthogonal projection onto the arrays of noise form `form` (a
  mean over channels, over blocks, or both; they commute), or None for
  "rgb". Signs and the eps clip keep an array of the form in it; the
  [0, 1] clip of `project` does not, at pixels where x + delta meets 0 or
  1."""
  if form not in FORMS:
    raise ValueError(f"unknown noise form {form!r}")
  if form == "rgb":
    return None
  if block < 1:
    raise ValueError(f"noise form block must be >= 1, got {block}")
  luma, low = form in ("luma", "luma_lowfreq"), "lowfreq" in form

  def subspace(a):
    if luma:
      a = channel_mean(a)
    if low:
      a = block_mean(a, block)
    return a
  return subspace


RANDOM_VALUES = ("uniform", "sign")


def random_noise(key: jax.Array, shape, *, eps: float, patch: int = 1,
                 values: str = "uniform") -> jax.Array:
  """The random-noise baseline: delta ~ U(-eps, eps) ("uniform") or +-eps
  with equal odds ("sign"), drawn once per `patch` x `patch` block of pixels
  (per channel) and repeated over the block (patch 1: independent per
  entry). Blocks tile the image from its top-left corner; the last row and
  column of blocks are cut at the border. Shape [..., H, W, C]."""
  if values not in RANDOM_VALUES:
    raise ValueError(f"unknown random noise values {values!r}")
  *lead, h, w, c = shape
  grid = (*lead, -(-h // patch), -(-w // patch), c)
  if values == "sign":
    draw = eps * jax.random.rademacher(key, grid, jnp.float32)
  else:
    draw = jax.random.uniform(key, grid, jnp.float32, minval=-eps, maxval=eps)
  if patch == 1:
    return draw
  axis = len(lead)
  draw = jnp.repeat(jnp.repeat(draw, patch, axis), patch, axis + 1)
  return draw[..., :h, :w, :]


def class_mean(class_noise: jax.Array, per_sample: jax.Array,
               labels: jax.Array, mask: jax.Array, *, eps: float) -> jax.Array:
  """The class-wise update of the original (docs/method.md §3): every class
  present in the batch gets the clipped mean of its examples' results,
  delta_c <- clip(mean_{i: y_i = c} per_sample_i, -eps, eps); classes absent
  from the batch (or present only in padding rows, mask 0) keep their noise.
  """
  k = class_noise.shape[0]
  weights = mask.astype(per_sample.dtype)
  expand = (-1,) + (1,) * (per_sample.ndim - 1)
  sums = jax.ops.segment_sum(per_sample * weights.reshape(expand), labels,
                             num_segments=k)
  counts = jax.ops.segment_sum(weights, labels, num_segments=k).reshape(expand)
  mean = jnp.clip(sums / jnp.maximum(counts, 1.0), -eps, eps)
  return jnp.where(counts > 0, mean, class_noise)


EPS_SNAP = 1e-4  # an eps this close to k/255 ([0, 1] units) means k/255


def snap_eps(eps: float, *, tol: float = EPS_SNAP) -> float:
  """k/255 for an eps within `tol` of it, else eps. A decimal written for
  k/255 (0.0313725 for 8/255) lies a hair below it, and the release, which
  keeps every pixel within floor(eps * 255) levels, would lose a level."""
  k = round(eps * 255.0)
  if k >= 1 and abs(eps - k / 255.0) <= tol:
    return k / 255.0
  return eps


def max_delta_u8(eps: float) -> int:
  """Largest integer pixel change that stays inside the eps-ball."""
  return int(np.floor(eps * 255.0 + 1e-6))


def release_images(images_u8, delta, *, eps: float, paper_release=False):
  """uint8 images that carry the noise.

  Default (docs/method.md, "Decisions"): clip(x + delta) rounded to uint8, then kept within
  the integer eps-ball, so |released - x| <= eps*255 holds exactly. With
  `paper_release=True` it reproduces the original's release: negative noise is
  zeroed (one-sided clamp), and the sum is truncated instead of rounded.
  Works on numpy or jax arrays (numpy in, numpy out).
  """
  xp = jnp if isinstance(images_u8, jax.Array) else np
  x = images_u8.astype(xp.float32)
  noise = xp.asarray(delta, dtype=xp.float32) * 255.0
  if paper_release:
    return xp.floor(xp.clip(x + xp.clip(noise, 0.0, 255.0), 0, 255)
                    ).astype(xp.uint8)
  q = xp.round(xp.clip(x + noise, 0.0, 255.0))
  m = max_delta_u8(eps)
  return xp.clip(q, x - m, x + m).astype(xp.uint8)


def to_float(images_u8: jax.Array) -> jax.Array:
  return images_u8.astype(jnp.float32) / 255.0


# ------------------------------------------------------------ noise storage
STORAGES = ("float32", "bfloat16", "int8")
INT8_LEVELS = 127  # int8 storage: integer steps of eps / 127


@dataclasses.dataclass(frozen=True)
class Codec:
  """How the state holds delta: float32 (exact), bfloat16 (8-bit mantissa,
  |error| <= 2^-9 |delta|) or int8 (integer steps of the quantum eps/127,
  |error| <= eps/254). `decode` always returns float32 within [-eps, eps].
  Frozen and hashable, so it binds into a jitted step as a static value."""
  storage: str = "float32"
  eps: float = 1.0

  @property
  def dtype(self):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
            "int8": jnp.int8}[self.storage]

  @property
  def quantum(self) -> float:
    return self.eps / INT8_LEVELS

  def encode(self, delta: jax.Array) -> jax.Array:
    if self.storage == "float32":
      return delta.astype(jnp.float32)
    if self.storage == "bfloat16":
      return delta.astype(jnp.bfloat16)
    steps = jnp.round(delta / self.quantum)
    return jnp.clip(steps, -INT8_LEVELS, INT8_LEVELS).astype(jnp.int8)

  def decode(self, stored: jax.Array) -> jax.Array:
    if self.storage == "float32":
      return stored
    if self.storage == "bfloat16":
      return jnp.clip(stored.astype(jnp.float32), -self.eps, self.eps)
    return jnp.clip(stored.astype(jnp.float32) * self.quantum, -self.eps,
                    self.eps)


FLOAT32 = Codec()
