"""The training augmentations (core/augment.py): crop shifts content by at
most the padding and fills with zeros, flip is an involution that mirrors
or keeps each image, rotation keeps the centre pixel."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from ue_jax.core import augment

B, H, W, C = 16, 7, 9, 2


def distinct_images():
  """Images whose pixels are all different and nonzero."""
  return jnp.arange(1, B * H * W * C + 1, dtype=jnp.float32).reshape(
      B, H, W, C)


def shifted(img, dy, dx):
  """img moved down by dy and right by dx, zeros where nothing moved in."""
  out = np.zeros_like(img)
  h, w = img.shape[:2]
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[
      max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


class AugmentTest(absltest.TestCase):

  def test_crop_is_a_shift_of_at_most_the_padding(self):
    x = np.asarray(distinct_images())
    pad = 2
    out = np.asarray(augment.random_crop(jax.random.key(0), x, pad=pad))
    self.assertEqual(out.shape, x.shape)
    shifts = set()
    for i in range(B):
      found = [(dy, dx) for dy in range(-pad, pad + 1)
               for dx in range(-pad, pad + 1)
               if np.array_equal(out[i], shifted(x[i], dy, dx))]
      self.assertLen(found, 1, i)  # each image: one shift within the pad
      shifts.add(found[0])
    self.assertGreater(len(shifts), 3)  # the shifts are drawn per image
    np.testing.assert_array_equal(
        augment.random_crop(jax.random.key(0), x, pad=0), x)

  def test_flip_mirrors_or_keeps_and_is_an_involution(self):
    x = distinct_images()
    key = jax.random.key(1)
    once = np.asarray(augment.random_flip(key, x))
    mirrored = [np.array_equal(once[i], np.asarray(x)[i, :, ::-1])
                for i in range(B)]
    kept = [np.array_equal(once[i], np.asarray(x)[i]) for i in range(B)]
    self.assertTrue(all(m != k for m, k in zip(mirrored, kept)))
    self.assertTrue(any(mirrored) and any(kept))
    np.testing.assert_array_equal(augment.random_flip(key, once), x)

  def test_rotation_keeps_the_centre_pixel(self):
    x = distinct_images()  # odd H and W: one centre pixel
    out = np.asarray(augment.random_rotate(jax.random.key(2), x,
                                           degrees=30.0))
    np.testing.assert_array_equal(out[:, H // 2, W // 2],
                                  np.asarray(x)[:, H // 2, W // 2])
    self.assertFalse(np.array_equal(out, x))  # the rest did move
    # A rotation only moves pixels: every output pixel is an input pixel
    # of the same image and channel, or a zero fill.
    for i in range(B):
      for c in range(C):
        values = set(np.asarray(x)[i, :, :, c].ravel()) | {0.0}
        self.assertTrue(set(out[i, :, :, c].ravel()) <= values)
    np.testing.assert_array_equal(
        augment.random_rotate(jax.random.key(2), x, degrees=0.0), x)

  def test_kinds_compose_in_order(self):
    x = distinct_images()
    key = jax.random.key(3)
    crop_key, flip_key = jax.random.split(key)
    np.testing.assert_array_equal(augment.augment(key, x, kind="none"), x)
    cropped = augment.random_crop(crop_key, x, pad=4)
    np.testing.assert_array_equal(augment.augment(key, x, kind="crop"),
                                  cropped)
    np.testing.assert_array_equal(
        augment.augment(key, x, kind="crop_flip"),
        augment.random_flip(flip_key, cropped))


if __name__ == "__main__":
  absltest.main()
