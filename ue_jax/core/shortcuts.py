"""Shortcut noise that needs no model: autoregressive (AR) perturbations,
linearly separable patches (LSP) and the one-pixel shortcut (OPS).

All three plant a feature that is easier to learn than the image and is tied
to the label; none of them trains anything.

- AR (Sandoval-Segura et al., NeurIPS 2022): every class has a causal 3x3
  autoregressive filter b (b[2, 2] = 0, entries summing to one per channel).
  Each image gets its own sample of its class's process: a Gaussian start
  signal of (H + crop) x (W + crop) pixels whose entries from row 2 and
  column 2 on are overwritten in raster order by
      x[i, j] = sum_{a, d in 0..2} b[a, d] x[i - 2 + a, j - 2 + d],
  the first `crop` rows and columns are dropped, and the rest is scaled to
  the budget (L-inf: max |x| = eps; L2: ||x||_2 = l2_eps, then clipped to
  the L-inf ball). The process is stationary, so a crop only shifts it.
  Filters are drawn at random and kept greedily when their samples stay
  bounded and every filter kept before responds strongly to them (the
  matched filter b with -1 at [2, 2] gives zero on its own process).
- LSP (Yu et al., KDD 2022): a point per image from a class cluster (class
  centroid at a random vertex of the hypercube of side 2 * class_sep,
  distinct per class, plus standard Gaussian noise), one value per `patch`
  x `patch` block, scaled to the L2 norm eps * sqrt(H W C) (the mean square
  of the L-inf budget), then clipped to the L-inf ball.
- OPS (Wu et al., ICLR 2023): per class one pixel position and one extreme
  value per channel (0 or 1), chosen class by class to maximize
  mean(|v - x|) / std(|v - x|) over the class's images at that pixel, a
  (position, value) pair used by an earlier class being excluded. Every
  image of the class gets that pixel set to v (L0 = 1, not eps-bounded).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ue_jax.runtime.errors import UEError

AR_WINDOW = 3


# ------------------------------------------------------------------- AR
def ar_candidates(key: jax.Array, count: int, channels: int) -> jax.Array:
  """`count` random AR filters [count, 3, 3, C]: N(0, 1) entries with the
  last one ([2, 2]) zero, each channel's entries divided by their sum."""
  b = jax.random.normal(key, (count, AR_WINDOW, AR_WINDOW, channels))
  b = b.at[:, -1, -1, :].set(0.0)
  return b / jnp.sum(b, axis=(1, 2), keepdims=True)


@functools.partial(jax.jit, static_argnames=("height", "width", "crop"))
def ar_process(key: jax.Array, filters: jax.Array, *, height: int, width: int,
               crop: int = 4) -> jax.Array:
  """Unscaled AR samples [N, height, width, C], one per filter row of
  `filters` [N, 3, 3, C] (channels independent, each with its own filter):
  a N(0, 1) start signal of (height + crop) x (width + crop), rows and
  columns from 2 on generated in raster order, the first `crop` rows and
  columns cut."""
  n, _, _, c = filters.shape
  h, w = height + crop, width + crop
  start = jax.random.normal(key, (h, n, w, c))
  k = AR_WINDOW - 1
  b = jnp.moveaxis(filters, 0, 2)  # [3, 3, N, C]

  def row(prev, new_start):
    # prev: the two rows above [2, N, w, C]; new_start: this row's start.
    # From rows above: sum over a < 2, d of b[a, d] x[a, j + d].
    above = sum(b[a, d][:, None, :] * prev[a, :, d:w - k + d, :]
                for a in range(k) for d in range(AR_WINDOW))

    def col(carry, up):
      left2, left1 = carry
      value = up + b[k, 0] * left2 + b[k, 1] * left1
      return (left1, value), value

    _, values = jax.lax.scan(col, (new_start[:, 0], new_start[:, 1]),
                             jnp.moveaxis(above, 1, 0))
    out = jnp.concatenate([new_start[:, :k], jnp.moveaxis(values, 0, 1)],
                          axis=1)
    return jnp.stack([prev[1], out]), out

  _, rows = jax.lax.scan(row, start[:k], start[k:])
  x = jnp.concatenate([start[:k], rows], axis=0)  # [h, N, w, C]
  return jnp.moveaxis(x, 1, 0)[:, crop:, crop:, :]


def scale(x: jax.Array, *, eps: float, norm: str = "linf",
          l2_eps: float = 0.0) -> jax.Array:
  """Scales each row of `x` [N, ...] to the budget: L-inf, max |x| = eps;
  L2, ||x||_2 = l2_eps (0: eps * sqrt(numel)), then clipped to [-eps, eps]."""
  axes = tuple(range(1, x.ndim))
  if norm == "linf":
    size = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
    return x * (eps / jnp.maximum(size, 1e-30))
  if norm != "l2":
    raise ValueError(f"unknown norm {norm!r}")
  target = l2_eps or eps * float(np.sqrt(np.prod(x.shape[1:])))
  size = jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))
  return jnp.clip(x * (target / jnp.maximum(size, 1e-30)), -eps, eps)


def ar_matched_response(filters: jax.Array, signal: jax.Array) -> jax.Array:
  """sum relu(conv(signal, f)) for every filter's matched filter f (b with
  -1 at [2, 2], zero-sum) on every signal [M, H, W, C]: [F, M]. Zero (up
  to rounding) where the signal is a sample of that filter's process."""
  matched = filters.at[:, -1, -1, :].set(-1.0)
  h, w = signal.shape[1:3]
  k = AR_WINDOW - 1
  out = sum(matched[:, None, a, d, None, None, :]
            * signal[None, :, a:h - k + a, d:w - k + d, :]
            for a in range(AR_WINDOW) for d in range(AR_WINDOW))
  return jnp.sum(jax.nn.relu(out), axis=(2, 3, 4))


_matched = jax.jit(ar_matched_response)


def ar_filters(key: jax.Array, num_classes: int, channels: int, *,
               height: int, width: int, crop: int = 4,
               norm_bound: float = 50.0, min_response: float = 10.0,
               trials: int = 3, batch: int = 256,
               max_batches: int = 200) -> jax.Array:
  """`num_classes` AR filters [K, 3, 3, C], found greedily as the AR paper's
  parameter finder does: candidates in order, each kept when `trials`
  samples of its process (at 36 x 36 cropped by 4 for 32 x 32 images: here
  `height` + crop) stay finite with L2 norm <= `norm_bound`, and every filter
  kept before responds to its (L2-normalized) sample with at least
  `min_response`. Deterministic in `key`."""
  kept = []
  for i in range(max_batches):
    cand_key, gen_key = jax.random.split(jax.random.fold_in(key, i))
    cands = ar_candidates(cand_key, batch, channels)
    reps = jnp.repeat(cands, trials, axis=0)
    raw = ar_process(gen_key, reps, height=height, width=width, crop=crop)
    norms = jnp.sqrt(jnp.sum(jnp.square(raw), axis=(1, 2, 3))).reshape(
        batch, trials)
    stable = np.asarray(jnp.all(jnp.isfinite(norms) & (norms <= norm_bound),
                                axis=1))
    last = scale(raw.reshape(batch, trials, *raw.shape[1:])[:, -1],
                 eps=1.0, norm="l2", l2_eps=1.0)
    ok = np.flatnonzero(stable)
    if not len(ok):
      continue
    # Every earlier and every stable candidate's matched filter against
    # every stable candidate's sample, at once: [len(kept) + len(ok), ok].
    pool = np.concatenate([np.asarray(kept).reshape(-1, *cands.shape[1:]),
                           np.asarray(cands)[ok]])
    resp = np.asarray(_matched(jnp.asarray(pool), last[ok]))
    base = len(kept)
    chosen = list(range(base))  # rows of `pool` kept so far
    for col, j in enumerate(ok):
      if chosen and resp[chosen, col].min() < min_response:
        continue
      chosen.append(base + col)
      kept.append(np.asarray(cands)[j])
      if len(kept) == num_classes:
        return jnp.asarray(np.stack(kept))
  raise UEError(f"found only {len(kept)} of {num_classes} AR filters in "
                f"{max_batches * batch} candidates that stay bounded and "
                "are told apart by the others' matched filters; AR noise "
                "cannot separate this many classes at this image size, "
                "choose another noise.kind (e.g. 'lsp')")


def ar_noise(key: jax.Array, filters: jax.Array, labels: jax.Array, *,
             height: int, width: int, eps: float, crop: int = 4,
             norm: str = "linf", l2_eps: float = 0.0) -> jax.Array:
  """AR noise [N, H, W, C]: a fresh sample of each label's process, scaled
  to the budget (`scale`)."""
  raw = ar_process(key, filters[labels], height=height, width=width,
                   crop=crop)
  return scale(raw, eps=eps, norm=norm, l2_eps=l2_eps)


# ------------------------------------------------------------------ LSP
def lsp_blocks(shape, patch: int) -> int:
  """How many patch x patch blocks (cut at the border) x channels an image
  of `shape` (H, W, C) has: the dimension of the LSP clusters."""
  h, w, c = shape
  return -(-h // patch) * -(-w // patch) * c


def lsp_vertices(key: jax.Array, num_classes: int, dim: int,
                 max_draws: int = 10_000) -> jax.Array:
  """`num_classes` distinct random vertices of {-1, 1}^dim [K, dim]: every
  class drawn at once, then each row that repeats an earlier one drawn
  again (from keys folded with 1, 2, ...) until none does, so a draw without
  repeats is the plain one. Refuses (UEError) more classes than the 2^dim
  vertices."""
  if dim < 63 and num_classes > 2 ** dim:
    raise UEError(f"linearly separable patches need a distinct vertex per "
                  f"class: {num_classes} classes, but {dim} block value(s) "
                  f"per image give only {2 ** dim} distinct vertices; choose "
                  "a smaller noise.lsp_patch")
  signs = np.array(jax.random.rademacher(key, (num_classes, dim),
                                         jnp.float32))
  for draw in range(1, max_draws + 1):
    _, first = np.unique(signs, axis=0, return_index=True)
    repeats = np.setdiff1d(np.arange(num_classes), first)
    if not len(repeats):
      return jnp.asarray(signs)
    signs[repeats] = np.asarray(jax.random.rademacher(
        jax.random.fold_in(key, draw), (len(repeats), dim), jnp.float32))
  raise UEError(f"no {num_classes} distinct LSP vertices of {dim} "
                f"dimensions in {max_draws} draws; choose a smaller "
                "noise.lsp_patch")


def lsp_noise(key: jax.Array, labels: jax.Array, num_classes: int, shape, *,
              eps: float, patch: int = 8, class_sep: float = 10.0,
              l2_eps: float = 0.0) -> jax.Array:
  """LSP noise [N, H, W, C] for `shape` = (H, W, C): per image a point of
  its class's cluster, one value per patch x patch block (cut at the
  border), scaled to L2 norm `l2_eps` (0: eps * sqrt(H W C)), clipped to
  [-eps, eps]."""
  h, w, c = shape
  grid = (-(-h // patch), -(-w // patch), c)
  dim = int(np.prod(grid))
  vertex_key, point_key = jax.random.split(key)
  centroids = class_sep * lsp_vertices(vertex_key, num_classes, dim)
  points = centroids[labels] + jax.random.normal(point_key,
                                                 (len(labels), dim))
  blocks = points.reshape(len(labels), *grid)
  full = jnp.repeat(jnp.repeat(blocks, patch, 1), patch, 2)[:, :h, :w, :]
  return scale(full, eps=eps, norm="l2", l2_eps=l2_eps)


# ------------------------------------------------------------------ OPS
def ops_values(channels: int) -> jax.Array:
  """The 2^C extreme pixel values [2^C, C], channel 0 the most significant
  bit (as the OPS code enumerates them)."""
  codes = np.arange(2 ** channels)
  bits = [(codes >> (channels - 1 - ch)) & 1 for ch in range(channels)]
  return jnp.asarray(np.stack(bits, -1), jnp.float32)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def ops_scores(images: jax.Array, labels: jax.Array, *,
               num_classes: int) -> jax.Array:
  """mean(|v - x|) / std(|v - x|) over each class's images (float [0, 1],
  [N, H, W, C]) at every pixel, for every extreme value v: [K, H*W, 2^C]
  (mean over channels inside |v - x|, as the OPS code's np.abs over the
  pixel's channels). Labels out of range (padding) count nowhere."""
  n, h, w, c = images.shape
  values = ops_values(c)
  dist = jnp.mean(jnp.abs(values[None, None, None] - images[..., None, :]),
                  axis=-1).reshape(n, h * w, -1)  # [N, HW, V]
  ones = jnp.ones((n,), jnp.float32)
  count = jax.ops.segment_sum(ones, labels, num_segments=num_classes)
  count = jnp.maximum(count, 1.0)[:, None, None]
  mean = jax.ops.segment_sum(dist, labels, num_segments=num_classes) / count
  # Two passes (no E[d^2] - E[d]^2 cancellation for steady pixels).
  centred = dist - mean.at[labels].get(mode="fill", fill_value=0.0)
  var = jax.ops.segment_sum(jnp.square(centred), labels,
                            num_segments=num_classes) / count
  return mean / jnp.maximum(jnp.sqrt(var), 1e-6)


def ops_pick(scores: np.ndarray) -> np.ndarray:
  """Greedy choice per class in order: the (pixel, value) of the highest
  score not taken by an earlier class. [K, 2] int (pixel, value code)."""
  scores = np.array(scores, np.float64)
  picks = []
  for k in range(scores.shape[0]):
    s = scores[k].copy()
    for p, v in picks:
      s[p, v] = -np.inf
    p, v = np.unravel_index(int(np.argmax(s)), s.shape)
    picks.append((int(p), int(v)))
  return np.asarray(picks, np.int64)


@jax.jit
def ops_noise(images: jax.Array, labels: jax.Array, picks: jax.Array
              ) -> jax.Array:
  """delta = v - x at the class's pixel, zero elsewhere: [N, H, W, C]."""
  n, h, w, c = images.shape
  pixel, code = picks[labels, 0], picks[labels, 1]
  value = ops_values(c)[code]  # [N, C]
  onehot = jax.nn.one_hot(pixel, h * w, dtype=images.dtype).reshape(n, h, w,
                                                                    1)
  return onehot * (value[:, None, None, :] - images)
