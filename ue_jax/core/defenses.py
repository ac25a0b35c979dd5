"""Training-time defenses against unlearnable data: pure, keyed batch math.

Images are float32 [B, H, W, C] in [0, 1]; labels are soft [B, K] (one-hot
on input) so that mixing defenses can return mixed labels. Every batch
defense has the signature `fn(key, x, y) -> (x, y)` and is jitted inside the
training step (core/defended_step.py). The data-level defenses (JPEG, and
image shortcut squeezing: grayscale then JPEG, with pillow; histogram
equalization, with numpy) work on uint8 images on the host, once on the
training images (`DATA_LEVEL`); adversarial training and the UEraser-style
defense change the step itself (defended_step.py), not only the batch.
Defenses that normalize a learner's inputs (colour standardization,
histogram equalization) act on the test images too (`TEST_BATCH`,
`TEST_DATA_LEVEL`); the others leave the test images as they are.
"""

import io
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from ue_jax.core import augment as augment_lib

Transform = Callable[[jax.Array, jax.Array, jax.Array], tuple]

# Hyperparameters of the battery's defenses (documented in docs/method.md).
CUTOUT_FRACTION = 0.5   # cutout square side / image side (16 px on 32 px)
MIX_ALPHA = 1.0         # mixup / cutmix: lambda ~ Beta(alpha, alpha)
NOISE_STD = 0.1         # Gaussian noise std, [0, 1] units
BLUR_SIGMA = 1.0        # Gaussian blur, 3x3 kernel
BIT_DEPTH = 3           # bits per channel kept (2^3 = 8 levels)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma
ISS_QUALITY = 10        # image shortcut squeezing: JPEG quality after gray
STANDARDIZE_EPS = 1e-3  # floor of a channel's std, [0, 1] units (1/4 level)


# ----------------------------------------------------------- basic ops
def crop_flip(key, x):
  """The standard augmentation: random crop (zero padding 4) + flip."""
  return augment_lib.augment(key, x, kind="crop_flip")


def cutout_at(x, centers, *, size: int):
  """Zeroes the size x size square of each image whose top-left corner is
  centers - size // 2 (clipped at the border: the square may be cut),
  all channels. `centers`: int [B, 2] (row, column)."""
  _, h, w, _ = x.shape
  top = centers[:, 0:1] - size // 2
  left = centers[:, 1:2] - size // 2
  rows = jnp.arange(h)[None, :]
  cols = jnp.arange(w)[None, :]
  in_rows = (rows >= top) & (rows < top + size)        # [B, H]
  in_cols = (cols >= left) & (cols < left + size)      # [B, W]
  square = in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]
  return jnp.where(square[..., None], 0.0, x)


def cutout(key, x, *, fraction: float = CUTOUT_FRACTION):
  """DeVries & Taylor's cutout: one square of side fraction x H at a
  uniformly random centre (anywhere in the image)."""
  b, h, w, _ = x.shape
  size = max(1, int(round(fraction * h)))
  centers = jnp.stack([jax.random.randint(key, (b,), 0, h),
                       jax.random.randint(jax.random.fold_in(key, 1), (b,),
                                          0, w)], axis=1)
  return cutout_at(x, centers, size=size)


def mix_weights(key, batch: int, *, alpha: float = MIX_ALPHA):
  """(lambda, partner permutation) for mixup and cutmix: one lambda per
  batch ~ Beta(alpha, alpha), a random permutation of the rows."""
  lam_key, perm_key = jax.random.split(key)
  lam = jax.random.beta(lam_key, alpha, alpha)
  return lam, jax.random.permutation(perm_key, batch)


def mixup_with(x, y, lam, perm):
  """lam * (x, y) + (1 - lam) * (x, y)[perm]: images and labels get the
  same weights."""
  return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def mixup(key, x, y, *, alpha: float = MIX_ALPHA):
  lam, perm = mix_weights(key, x.shape[0], alpha=alpha)
  return mixup_with(x, y, lam, perm)


def cutmix_box(key, h: int, w: int, lam):
  """(top, left, box height, box width) of Yun et al.'s box: side
  sqrt(1 - lam) of the image's, uniformly random centre, cut at the
  border."""
  cut = jnp.sqrt(1.0 - lam)
  bh = jnp.round(cut * h).astype(jnp.int32)
  bw = jnp.round(cut * w).astype(jnp.int32)
  cy = jax.random.randint(key, (), 0, h)
  cx = jax.random.randint(jax.random.fold_in(key, 1), (), 0, w)
  top, bottom = jnp.clip(cy - bh // 2, 0, h), jnp.clip(cy - bh // 2 + bh, 0, h)
  left, right = jnp.clip(cx - bw // 2, 0, w), jnp.clip(cx - bw // 2 + bw, 0, w)
  return top, left, bottom - top, right - left


def cutmix_with(x, y, perm, box):
  """Pastes the box of the partner image into each image; the label
  weight of the partner is the pasted area fraction, exactly."""
  _, h, w, _ = x.shape
  top, left, bh, bw = box
  rows = (jnp.arange(h) >= top) & (jnp.arange(h) < top + bh)
  cols = (jnp.arange(w) >= left) & (jnp.arange(w) < left + bw)
  inside = (rows[:, None] & cols[None, :])[None, :, :, None]
  area = (bh * bw).astype(jnp.float32) / (h * w)
  return (jnp.where(inside, x[perm], x),
          (1 - area) * y + area * y[perm])


def cutmix(key, x, y, *, alpha: float = MIX_ALPHA):
  lam, perm = mix_weights(key, x.shape[0], alpha=alpha)
  box = cutmix_box(jax.random.fold_in(key, 2), x.shape[1], x.shape[2], lam)
  return cutmix_with(x, y, perm, box)


def gaussian_noise(key, x, *, std: float = NOISE_STD):
  return jnp.clip(x + std * jax.random.normal(key, x.shape), 0.0, 1.0)


def gaussian_kernel(sigma: float, size: int = 3) -> np.ndarray:
  """The normalized 1-D Gaussian kernel of odd `size`."""
  r = np.arange(size) - size // 2
  k = np.exp(-r**2 / (2.0 * sigma**2))
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(x, *, sigma: float = BLUR_SIGMA, size: int = 3):
  """Separable Gaussian blur, each channel alone, edge padding (reflect-
  free: a constant image stays constant)."""
  k = jnp.asarray(gaussian_kernel(sigma, size))
  p = size // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
  h, w = x.shape[1], x.shape[2]
  rows = sum(k[i] * xp[:, i:i + h, :, :] for i in range(size))
  return sum(k[j] * rows[:, :, j:j + w, :] for j in range(size))


def median_filter(x, *, size: int = 3):
  """The median of each size x size window (edge padding), per channel."""
  p = size // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
  h, w = x.shape[1], x.shape[2]
  windows = jnp.stack([xp[:, i:i + h, j:j + w, :] for i in range(size)
                       for j in range(size)], axis=0)
  return jnp.median(windows, axis=0)


def bit_depth(x, *, bits: int = BIT_DEPTH):
  """Rounds each value to the nearest of 2^bits evenly spaced levels in
  [0, 1] (0 and 1 included)."""
  levels = 2**bits - 1
  return jnp.round(jnp.clip(x, 0.0, 1.0) * levels) / levels


def grayscale(x):
  """Luma (BT.601) repeated over the 3 channels."""
  gray = jnp.tensordot(x, jnp.asarray(GRAY_WEIGHTS, x.dtype), axes=[[3], [0]])
  return jnp.repeat(gray[..., None], x.shape[-1], axis=-1)


def jpeg_u8(images_u8: np.ndarray, *, quality: int) -> np.ndarray:
  """Each uint8 image [N, H, W, C] (C 1 or 3) encoded as a JPEG at
  `quality` with pillow and decoded again (host numpy, not jitted)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = np.empty_like(images_u8)
  for i, img in enumerate(images_u8):
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    dec = np.asarray(Image.open(buf))
    out[i] = dec.reshape(img.shape)
  return out


def gray_u8(images_u8: np.ndarray) -> np.ndarray:
  """Luma (BT.601, GRAY_WEIGHTS) of uint8 RGB images [N, H, W, 3], rounded
  to uint8, one channel [N, H, W, 1]."""
  luma = np.tensordot(images_u8.astype(np.float64), np.asarray(GRAY_WEIGHTS),
                      axes=[[3], [0]])
  return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def iss_u8(images_u8: np.ndarray, *, quality: int = ISS_QUALITY
           ) -> np.ndarray:
  """Image shortcut squeezing's combination: the luma (`gray_u8`), then a
  JPEG round trip of that one-channel image at `quality` (`jpeg_u8`),
  repeated over the input's channels."""
  squeezed = jpeg_u8(gray_u8(images_u8), quality=quality)
  return np.repeat(squeezed, images_u8.shape[-1], axis=-1)


def colour_standardize(x, *, eps: float = STANDARDIZE_EPS):
  """Each channel of each image to zero mean and unit standard deviation
  over its pixels: (x - mean) / max(std, eps), so a flat channel becomes 0.
  Invariant to adding a constant to a channel and to scaling it by a
  positive factor (while its std stays above eps): a per-image or per-class
  colour offset is removed exactly."""
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  std = jnp.std(x, axis=(1, 2), keepdims=True)
  return (x - mean) / jnp.maximum(std, eps)


def equalize_u8(images_u8: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
  """Each channel of each uint8 image [N, H, W, C] histogram-equalized with
  numpy: level v -> floor(255 (cdf(v) - cdf_min) / (P - cdf_min) + 1/2),
  cdf(v) the channel's pixels at or below v, cdf_min its count at its
  darkest level, P its pixel count; the darkest level goes to 0, the
  brightest to 255; a flat channel is left as it is. A monotone map of a
  channel's levels (an added constant, a positive integer factor, without
  clipping) leaves the result unchanged."""
  n, h, w, c = images_u8.shape
  out = np.empty_like(images_u8)
  for lo in range(0, n, chunk):
    part = images_u8[lo:lo + chunk]
    m = len(part) * c
    flat = part.transpose(0, 3, 1, 2).reshape(m, h * w).astype(np.int64)
    hist = np.bincount((flat + 256 * np.arange(m)[:, None]).ravel(),
                       minlength=256 * m).reshape(m, 256)
    cdf = np.cumsum(hist, axis=1)
    cdf_min = hist[np.arange(m), flat.min(axis=1)][:, None]
    span = h * w - cdf_min
    lut = np.floor(255.0 * (cdf - cdf_min) / np.maximum(span, 1) + 0.5)
    lut = np.where(span > 0, np.clip(lut, 0, 255), np.arange(256))
    mapped = np.take_along_axis(lut, flat, axis=1).astype(np.uint8)
    out[lo:lo + chunk] = mapped.reshape(len(part), c, h, w).transpose(
        0, 2, 3, 1)
  return out


class EvalInputs:
  """`model` (a Flax module) whose inputs pass through `fn` when it runs in
  evaluation mode (train=False: the test images, and init), not in
  training mode, where the defense's step transforms the batch itself."""

  def __init__(self, model, fn):
    self.model, self.fn = model, fn

  def init(self, rngs, x, *args, train: bool = False, **kwargs):
    return self.model.init(rngs, x if train else self.fn(x), *args,
                           train=train, **kwargs)

  def apply(self, variables, x, *args, train: bool = False, **kwargs):
    return self.model.apply(variables, x if train else self.fn(x), *args,
                            train=train, **kwargs)


# ----------------------------------------------------- UEraser-style ops
def plasma(key, shape, *, roughness: float = 0.5):
  """A smooth random field in [-1, 1] per image [B, H, W, 1]: a sum of
  uniform noise at scales H/8, H/4, H/2 (bilinear upsampling), the
  finer scales weighted by `roughness` (a cheap stand-in for the diamond-
  square plasma fractal)."""
  b, h, w = shape[0], shape[1], shape[2]
  field = jnp.zeros((b, h, w, 1))
  total = 0.0
  for level, div in enumerate((8, 4, 2)):
    gh, gw = max(2, h // div), max(2, w // div)
    coarse = jax.random.uniform(jax.random.fold_in(key, level), (b, gh, gw, 1),
                                minval=-1.0, maxval=1.0)
    weight = roughness**level
    field += weight * jax.image.resize(coarse, (b, h, w, 1), "bilinear")
    total += weight
  return field / total


def plasma_brightness(key, x, *, intensity: float = 0.5):
  """Adds a per-image smooth field of amplitude U(0, intensity)."""
  amp = jax.random.uniform(key, (x.shape[0], 1, 1, 1), maxval=intensity)
  return jnp.clip(x + amp * plasma(jax.random.fold_in(key, 1), x.shape),
                  0.0, 1.0)


def plasma_contrast(key, x, *, strength: float = 0.5):
  """Scales each pixel's deviation from the image mean by a smooth
  factor in [1 - strength, 1 + strength]."""
  factor = 1.0 + strength * plasma(key, x.shape)
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return jnp.clip(mean + factor * (x - mean), 0.0, 1.0)


def channel_shuffle(key, x, *, p: float = 0.5):
  """With probability p a random permutation of each image's channels."""
  b, c = x.shape[0], x.shape[-1]
  if c == 1:
    return x
  perms = jax.vmap(lambda k: jax.random.permutation(k, c))(
      jax.random.split(key, b))
  shuffled = jnp.take_along_axis(x, perms[:, None, None, :], axis=-1)
  keep = jax.random.bernoulli(jax.random.fold_in(key, 1), p, (b, 1, 1, 1))
  return jnp.where(keep, shuffled, x)


def trivial_op(key, x):
  """One op per image, chosen uniformly (TrivialAugment's rule, a subset of
  its ops at a uniformly random strength): identity, rotation up to 30
  degrees, solarize, posterize (2-7 bits), autocontrast, sharpness
  (unsharp mask up to 2x), cutout of a random square up to half the side."""
  b = x.shape[0]
  keys = jax.random.split(key, 8)
  s = jax.random.uniform(keys[0], (b, 1, 1, 1))
  lo = jnp.min(x, axis=(1, 2), keepdims=True)
  hi = jnp.max(x, axis=(1, 2), keepdims=True)
  bits = jnp.floor(2 + 6 * s)
  ops = jnp.stack([
      x,
      augment_lib.random_rotate(keys[1], x, degrees=30.0),
      jnp.where(x >= 1.0 - s, 1.0 - x, x),
      jnp.floor(x * (2**bits - 1) + 0.5) / (2**bits - 1),
      (x - lo) / jnp.maximum(hi - lo, 1e-3),
      jnp.clip(x + 2 * s * (x - gaussian_blur(x)), 0.0, 1.0),
      cutout(keys[2], x, fraction=0.5),
  ])
  choice = jax.random.randint(keys[3], (b, 1, 1, 1), 0, ops.shape[0])
  # A select per op, not ops[choice, arange(b)]: that gather needs its
  # indices on every device, an all-gather on a sharded batch.
  out = ops[0]
  for k in range(1, ops.shape[0]):
    out = jnp.where(choice == k, ops[k], out)
  return out


def ueraser(key, x):
  """One strongly augmented copy per image (UEraser's recipe, in spirit):
  crop+flip, plasma brightness, plasma contrast, channel shuffle (colour
  only) and one TrivialAugment-style op."""
  keys = jax.random.split(key, 5)
  x = crop_flip(keys[0], x)
  x = plasma_brightness(keys[1], x)
  x = plasma_contrast(keys[2], x)
  x = channel_shuffle(keys[3], x)
  return trivial_op(keys[4], x)


# ---------------------------------------------------------- the registry
def _images_only(fn):
  return lambda key, x, y: (fn(key, x), y)


def _deterministic(fn):
  return lambda key, x, y: (fn(x), y)


def _after_crop_flip(fn):
  """fn applied after the standard crop+flip (as APBench stacks them)."""
  def transform(key, x, y):
    return fn(jax.random.fold_in(key, 7), crop_flip(key, x), y)
  return transform


# Defenses that are batch transforms, by battery name.
BATCH: Dict[str, Transform] = {
    "none": lambda key, x, y: (x, y),
    "crop_flip": _images_only(crop_flip),
    "cutout": _after_crop_flip(_images_only(cutout)),
    "mixup": _after_crop_flip(mixup),
    "cutmix": _after_crop_flip(cutmix),
    "gaussian_noise": _after_crop_flip(_images_only(gaussian_noise)),
    "gaussian_blur": _after_crop_flip(_deterministic(gaussian_blur)),
    "median_filter": _after_crop_flip(_deterministic(median_filter)),
    "bit_depth": _after_crop_flip(_deterministic(bit_depth)),
    "grayscale": _after_crop_flip(_deterministic(grayscale)),
    "ueraser": _images_only(ueraser),
    # Data-level and step-level defenses train with crop+flip batches.
    "jpeg10": _images_only(crop_flip),
    "jpeg50": _images_only(crop_flip),
    "iss": _images_only(crop_flip),
    "adv_train": _images_only(crop_flip),
    # Standardized before crop+flip, so the zero padding is each channel's
    # mean and carries no trace of the image's colour.
    "colour_standardize": lambda key, x, y: (
        crop_flip(key, colour_standardize(x)), y),
    "histogram_equalize": _images_only(crop_flip),
}
# Data-level defenses: uint8 [N, H, W, C] -> uint8, applied once on the host
# to the training images before the (crop+flip) training.
DATA_LEVEL: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg10": lambda images: jpeg_u8(images, quality=10),
    "jpeg50": lambda images: jpeg_u8(images, quality=50),
    "iss": iss_u8,
    "histogram_equalize": equalize_u8,
}
# Input normalizations a learner applies to its test images as well: batch
# transforms in the evaluation step (EvalInputs), data-level ones on the
# host to the test set.
TEST_BATCH: Dict[str, Callable] = {"colour_standardize": colour_standardize}
TEST_DATA_LEVEL = ("histogram_equalize",)
NAMES = tuple(BATCH)
COLOUR_ONLY = ("grayscale", "iss")
