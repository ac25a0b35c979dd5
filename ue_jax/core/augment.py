"""On-device training augmentations (pure, keyed): random crop with zero padding,
horizontal flip and rotation, as torchvision's RandomCrop(pad) +
RandomHorizontalFlip + RandomRotation(degrees) (nearest pixel, zero fill)."""

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
  recipe, docs/method.md §1)."""
  if kind == "none":
    return x
  crop_key, flip_key = jax.random.split(key)
  x = random_crop(crop_key, x, pad=pad)
  if kind == "crop":
    return x
  x = random_flip(flip_key, x)
  if kind == "crop_flip_rotate":
    x = random_rotate(jax.random.fold_in(key, 3), x, degrees=degrees)
  return x


KINDS = ("none", "crop", "crop_flip", "crop_flip_rotate")
