"""Visibility measures of a release: PSNR from a known error, SSIM's bounds
and invariances, the mean |change|."""

import numpy as np
from absl.testing import absltest

from ue_jax.evaluation import quality


def images(n=3, size=16, seed=0):
  return np.random.default_rng(seed).integers(20, 230, (n, size, size, 3),
                                              dtype=np.uint8)


class QualityTest(absltest.TestCase):

  def test_psnr_of_a_known_error(self):
    x = images()
    y = x.astype(np.int16)
    y[0] += 4  # mse 16 -> 10 log10(255^2 / 16)
    y[1, ::2] += 8  # half the pixels by 8: mse 32
    got = quality.psnr(x, y.astype(np.uint8))
    np.testing.assert_allclose(got[:2], [10 * np.log10(255 ** 2 / 16),
                                         10 * np.log10(255 ** 2 / 32)])
    self.assertEqual(got[2], quality.PSNR_CAP)

  def test_ssim_is_one_for_the_same_image_and_falls_with_noise(self):
    x = images()
    np.testing.assert_allclose(quality.ssim(x, x), 1.0)
    rng = np.random.default_rng(1)
    small = np.clip(x + rng.integers(-4, 5, x.shape), 0, 255).astype(np.uint8)
    large = np.clip(x + rng.integers(-32, 33, x.shape), 0, 255).astype(
        np.uint8)
    s_small, s_large = quality.ssim(x, small), quality.ssim(x, large)
    self.assertTrue(np.all(s_large < s_small))
    self.assertTrue(np.all(s_small < 1.0))
    # a constant shift moves the means only: luminance term near 1
    shifted = (x.astype(np.int16) + 2).astype(np.uint8)
    self.assertTrue(np.all(quality.ssim(x, shifted) > 0.999))

  def test_summary_of_the_selected_rows(self):
    x = images(n=4)
    y = x.copy()
    y[1] = np.clip(y[1].astype(np.int16) + 3, 0, 255)
    got = quality.summary(x, y, rows=np.array([False, True, False, False]))
    self.assertEqual(got["images"], 1)
    self.assertAlmostEqual(got["mean_abs_change_255"], 3.0)
    self.assertAlmostEqual(got["psnr_db"], 10 * np.log10(255 ** 2 / 9))


if __name__ == "__main__":
  absltest.main()
