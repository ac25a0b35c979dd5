"""On-device training augmentations (pure, keyed): random crop with zero padding
and horizontal flip, as torchvision's RandomCrop(pad) + RandomHorizontalFlip."""

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


def augment(key, x, *, kind: str, pad: int = 4):
  """kind: 'none', 'crop' or 'crop_flip'."""
  if kind == "none":
    return x
  crop_key, flip_key = jax.random.split(key)
  x = random_crop(crop_key, x, pad=pad)
  return random_flip(flip_key, x) if kind == "crop_flip" else x


KINDS = ("none", "crop", "crop_flip")
