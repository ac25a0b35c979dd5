"""On-device training augmentations (pure, keyed): random crop with zero padding,
horizontal flip and rotation, as torchvision's RandomCrop(pad) +
RandomHorizontalFlip + RandomRotation(degrees) (nearest pixel, zero fill);
and the robust kinds, each differentiable in the images (the noise search
draws them inside its PGD, `noise.eot_augment`, and its model steps train
on them, `generate.augment`):

- "gray": each image turned to its BT.601 luma with probability 1/2;
- "jpeg": the batch through the differentiable JPEG round trip
  (core/jpeg.py, straight-through rounding) at a quality drawn per batch
  from JPEG_QUALITIES; "jpeg10": the same at quality 10 for every batch (the
  battery's jpeg10 defense, the harshest setting);
- "strong": AUE's augmentation at strength 0.6 (random resized crop, flip,
  colour jitter, random grayscale; `strong`);
- "pool": each image one of crop_flip, gray, jpeg and strong, uniformly.
"""

import functools
import math

import jax
import jax.numpy as jnp


def random_crop(key, x, *, pad: int):
  if pad <= 0:
    return x
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, x.shape[3]))

  return jax.vmap(crop)(padded, offsets)


def random_flip(key, x):
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1, :], x)


def random_rotate(key, x, *, degrees: float):
  """Rotates each image about its centre by an angle ~ U(-degrees, degrees):
  nearest source pixel, zeros where the source falls outside."""
  b, h, w, _ = x.shape
  angles = jax.random.uniform(key, (b,), minval=-degrees,
                              maxval=degrees) * (math.pi / 180.0)
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  yy, xx = jnp.meshgrid(jnp.arange(h) - cy, jnp.arange(w) - cx,
                        indexing="ij")

  def rotate(img, angle):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    ys = jnp.round(cos * yy - sin * xx + cy).astype(jnp.int32)
    xs = jnp.round(sin * yy + cos * xx + cx).astype(jnp.int32)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    out = img[jnp.clip(ys, 0, h - 1), jnp.clip(xs, 0, w - 1)]
    return jnp.where(inside[..., None], out, 0.0)

  return jax.vmap(rotate)(x, angles)


def augment(key, x, *, kind: str, pad: int = 4, degrees: float = 20.0):
  """kind: 'none', 'crop', 'crop_flip' or 'crop_flip_rotate' (CIFAR-100's
  recipe, docs/method.md §1), or one of ROBUST_KINDS."""
  if kind == "none":
    return x
  if kind in ROBUST_KINDS:
    return robust(key, x, kind=kind, pad=pad)
  crop_key, flip_key = jax.random.split(key)
  x = random_crop(crop_key, x, pad=pad)
  if kind == "crop":
    return x
  x = random_flip(flip_key, x)
  if kind == "crop_flip_rotate":
    x = random_rotate(jax.random.fold_in(key, 3), x, degrees=degrees)
  return x


# ----------------------------------------------------------- robust kinds
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601, as defenses.GRAY_WEIGHTS
GRAY_P = 0.5                          # "gray": chance per image
JPEG_QUALITIES = (10, 30, 50, 75)     # "jpeg": one drawn per batch
# "strong": AUE's constant augmentation (EhanW/AUE-AAP, utils.Augment) at
# the strength of its CIFAR-10 example, s = 0.6: random resized crop of
# area scale U(max(1 - 0.9 s, 0.05), 1) and aspect ratio log-U(3/4, 4/3),
# flip with p 1/2, colour jitter of strength 0.4 s (brightness, contrast,
# saturation) applied with p min(0.99, 0.8 s), grayscale with p 0.2 s.
STRENGTH = 0.6
POOL = ("crop_flip", "gray", "jpeg", "strong")
ROBUST_KINDS = ("gray", "jpeg", "jpeg10", "strong", "pool")


def luma(x):
  """BT.601 luma repeated over the 3 channels (one-channel images as they
  are)."""
  if x.shape[-1] != 3:
    return x
  gray = jnp.tensordot(x, jnp.asarray(GRAY_WEIGHTS, x.dtype), axes=[[3], [0]])
  return jnp.repeat(gray[..., None], 3, axis=-1)


def random_gray(key, x, *, p: float = GRAY_P):
  """Each image replaced by its luma with probability p."""
  pick = jax.random.bernoulli(key, p, (x.shape[0], 1, 1, 1))
  return jnp.where(pick, luma(x), x)


def jpeg_round_trip(x, quality: int):
  """core/jpeg.py's round trip (straight-through rounding) of images
  [B, H, W, C]; a one-channel batch goes through as R = G = B, whose
  chroma is flat, and comes back as its luma."""
  # Imported here: only a JPEG augmentation traces it.
  # pylint: disable-next=g-import-not-at-top
  from ue_jax.core import jpeg as jpeg_lib
  if x.shape[-1] == 3:
    return jpeg_lib.jpeg(x, quality, rounding="ste")
  out = jpeg_lib.jpeg(jnp.repeat(x, 3, axis=-1), quality, rounding="ste")
  return out[..., :1]


def random_jpeg(key, x, *, qualities=JPEG_QUALITIES):
  """The batch's JPEG round trip at one quality drawn uniformly from
  `qualities` (static values: the draw picks a branch of lax.switch)."""
  index = jax.random.randint(key, (), 0, len(qualities))
  return jax.lax.switch(index, [functools.partial(jpeg_round_trip, quality=q)
                                for q in qualities], x)


def _bilinear_crop(img, top, left, h, w):
  """The box [top, top + h) x [left, left + w) of img [H, W, C] resized to
  H x W bilinearly (half-pixel centres, edges clamped: torch's
  align_corners=False); top, left, h, w are traced integers."""
  out_h, out_w = img.shape[0], img.shape[1]

  def taps(size, out, start):
    src = (jnp.arange(out, dtype=jnp.float32) + 0.5) * (size / out) - 0.5
    src = jnp.clip(src, 0.0, (size - 1).astype(jnp.float32))
    lo = jnp.floor(src).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, size - 1)
    return start + lo, start + hi, src - lo

  y0, y1, wy = taps(h, out_h, top)
  x0, x1, wx = taps(w, out_w, left)
  rows = (img[y0] * (1.0 - wy)[:, None, None] + img[y1] * wy[:, None, None])
  return (rows[:, x0] * (1.0 - wx)[None, :, None]
          + rows[:, x1] * wx[None, :, None])


def random_resized_crop(key, x, *, scale=(0.46, 1.0),
                        ratio=(3.0 / 4.0, 4.0 / 3.0)):
  """torchvision's RandomResizedCrop to the input size, per image: a box
  of area scale ~ U(scale) of the image and aspect ratio log-uniform in
  `ratio`, sides rounded and clipped to the image (torchvision redraws up
  to 10 times instead), at a uniform position, resized bilinearly."""
  b, h, w, _ = x.shape
  ks, kr, ky, kx = jax.random.split(key, 4)
  area = jax.random.uniform(ks, (b,), minval=scale[0], maxval=scale[1]) * (
      h * w)
  log_r = jax.random.uniform(kr, (b,), minval=math.log(ratio[0]),
                             maxval=math.log(ratio[1]))
  bw = jnp.clip(jnp.round(jnp.sqrt(area * jnp.exp(log_r))), 1, w)
  bh = jnp.clip(jnp.round(jnp.sqrt(area / jnp.exp(log_r))), 1, h)
  bw, bh = bw.astype(jnp.int32), bh.astype(jnp.int32)
  top = jnp.floor(jax.random.uniform(ky, (b,)) * (h - bh + 1)).astype(
      jnp.int32)
  left = jnp.floor(jax.random.uniform(kx, (b,)) * (w - bw + 1)).astype(
      jnp.int32)
  return jax.vmap(_bilinear_crop)(x, top, left, bh, bw)


def color_jitter(key, x, *, brightness: float, contrast: float,
                 saturation: float, p: float):
  """torchvision's ColorJitter (brightness, contrast, saturation, each
  factor ~ U(max(0, 1 - s), 1 + s), clipped to [0, 1] after each, in this
  fixed order; no hue) applied to each image with probability p."""
  b = x.shape[0]
  kb, kc, ks, kp = jax.random.split(key, 4)

  def factor(k, s):
    return jax.random.uniform(k, (b, 1, 1, 1), minval=max(0.0, 1.0 - s),
                              maxval=1.0 + s)

  y = jnp.clip(x * factor(kb, brightness), 0.0, 1.0)
  mean = jnp.mean(luma(y)[..., :1], axis=(1, 2, 3), keepdims=True)
  f = factor(kc, contrast)
  y = jnp.clip(f * y + (1.0 - f) * mean, 0.0, 1.0)
  f = factor(ks, saturation)
  y = jnp.clip(f * y + (1.0 - f) * luma(y), 0.0, 1.0)
  return jnp.where(jax.random.bernoulli(kp, p, (b, 1, 1, 1)), y, x)


def strong(key, x, *, strength: float = STRENGTH):
  """AUE's augmentation at `strength` (see STRENGTH): random resized crop,
  flip, colour jitter, random grayscale; values stay in [0, 1]."""
  kc, kf, kj, kg = jax.random.split(key, 4)
  x = random_resized_crop(kc, x, scale=(max(1.0 - 0.9 * strength, 0.05),
                                        1.0))
  x = random_flip(kf, x)
  s = 0.4 * strength
  x = color_jitter(kj, x, brightness=s, contrast=s, saturation=s,
                   p=min(0.99, 0.8 * strength))
  return random_gray(kg, x, p=0.2 * strength)


def pool_choice(key, batch: int):
  """The POOL index each image of a "pool" batch takes."""
  return jax.random.randint(key, (batch,), 0, len(POOL))


def robust(key, x, *, kind: str, pad: int = 4):
  """One of ROBUST_KINDS applied to the batch x [B, H, W, C] in [0, 1]."""
  if kind == "gray":
    return random_gray(key, x)
  if kind == "jpeg":
    return random_jpeg(key, x)
  if kind == "jpeg10":
    return jpeg_round_trip(x, 10)
  if kind == "strong":
    return strong(key, x)
  if kind != "pool":
    raise ValueError(f"unknown robust augmentation {kind!r}")
  choice_key, *keys = jax.random.split(key, len(POOL) + 1)
  choice = pool_choice(choice_key, x.shape[0])
  out = x
  for i, (name, k) in enumerate(zip(POOL, keys)):
    y = augment(k, x, kind=name, pad=pad)
    out = jnp.where((choice == i)[:, None, None, None], y, out)
  return out


KINDS = ("none", "crop", "crop_flip", "crop_flip_rotate") + ROBUST_KINDS
