"""The differentiable JPEG (core/jpeg.py): its DCTs and tables, its round
trip against pillow's, its gradients and constant colours."""

import io
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized
from PIL import Image

from tests import helpers
from ue_jax.core import jpeg as jpeg_lib

sys.path.insert(0, os.path.join(helpers.REPO, "tools"))
import jpeg_match  # pylint: disable=g-import-not-at-top,wrong-import-position

CIFAR10 = os.environ.get("UE_JAX_CIFAR10", "")
QUALITIES = (10, 50, 75)


def smooth_images(n, h, w, seed):
  """Slow luminance waves with gentle colour ramps, uint8 [n, h, w, 3]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  out = []
  for _ in range(n):
    fy, fx = rng.uniform(0.2, 1.0, 2)
    lum = 120 + 60 * np.sin(2 * np.pi * (fx * xx + fy * yy) +
                            rng.uniform(0, 6))
    ramp = (rng.uniform(-25, 25, 3) * (xx[..., None] - 0.5) +
            rng.uniform(-25, 25, 3) * (yy[..., None] - 0.5))
    out.append(lum[..., None] + ramp)
  return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def textured_images(n, h, w, seed):
  """Smooth images plus pixel noise (std 25), a saturated rectangle and a
  stripe pattern: edges, texture and clipping."""
  rng = np.random.default_rng(seed + 1000)
  x = smooth_images(n, h, w, seed).astype(np.float64)
  x += rng.normal(0.0, 25.0, x.shape)
  for img in x:
    top, left = rng.integers(0, h // 2 + 1), rng.integers(0, w // 2 + 1)
    img[top:top + h // 3 + 1, left:left + w // 3 + 1] = rng.choice(
        [0.0, 255.0], 3)
    img[:, ::3, rng.integers(0, 3)] += 60.0
  return np.clip(x, 0, 255).astype(np.uint8)


def run_jpeg(images_u8, quality, rounding="ste"):
  """jpeg() on uint8 images, as uint8 levels (int32)."""
  x = jnp.asarray(images_u8, jnp.float32) / 255.0
  out = np.asarray(jpeg_lib.jpeg(x, quality, rounding=rounding)) * 255.0
  levels = np.round(out)
  np.testing.assert_allclose(out, levels, atol=1e-3)  # on the 256 levels
  return levels.astype(np.int32)


def assert_matches_pillow(test, images_u8, quality):
  """Measured on pillow 13.0 (libjpeg-turbo, the jpeg 6.2 API): identical
  outputs, mean and max difference 0, on every image here and on the first
  1000 CIFAR-10 training images at q 10, 50, 75 (tools/jpeg_match.py).
  The bound leaves room for a libjpeg build whose arithmetic differs in a
  few coefficients: mean below 0.01 levels, 99.9% of values identical."""
  ref = jpeg_match.pillow_round_trip(images_u8, quality).astype(np.int32)
  diff = np.abs(run_jpeg(images_u8, quality) - ref)
  test.assertLess(diff.mean(), 0.01, f"q={quality}")
  test.assertGreaterEqual((diff == 0).mean(), 0.999, f"q={quality}")


class TransformTest(parameterized.TestCase):

  def test_dct_is_orthonormal(self):
    d = jpeg_lib.dct_matrix()
    chex.assert_trees_all_close(d @ d.T, np.eye(8, dtype=np.float32),
                                atol=1e-6)
    blocks = jax.random.uniform(jax.random.key(0), (64, 8, 8), minval=-128,
                                maxval=128)
    coeffs = jpeg_lib.block_dct(blocks)
    chex.assert_trees_all_close(jpeg_lib.block_idct(coeffs), blocks,
                                atol=1e-3)
    # Orthonormal: energy kept; DC = 8 x the block mean.
    chex.assert_trees_all_close((coeffs**2).sum((-2, -1)),
                                (blocks**2).sum((-2, -1)), rtol=1e-5)
    chex.assert_trees_all_close(coeffs[:, 0, 0], 8 * blocks.mean((-2, -1)),
                                atol=1e-3)

  def test_dct_basis_against_the_formula(self):
    # F(u, v) = C(u) C(v) / 4 sum f(x, y) cos((2x+1)u pi/16) cos(...),
    # C(0) = 1/sqrt(2), else 1 (ITU T.81 A.3.3): one basis block each.
    rng = np.random.default_rng(0)
    block = rng.uniform(-128, 128, (8, 8))
    c = lambda u: 1 / np.sqrt(2) if u == 0 else 1.0
    cos = lambda i, u: np.cos((2 * i + 1) * u * np.pi / 16)
    ref = np.array([[c(u) * c(v) / 4 * sum(
        block[y, x] * cos(y, u) * cos(x, v) for y in range(8)
        for x in range(8)) for v in range(8)] for u in range(8)])
    got = jpeg_lib.block_dct(jnp.asarray(block, jnp.float32))
    chex.assert_trees_all_close(got, ref.astype(np.float32), atol=2e-3)

  def test_integer_dcts_approximate_the_float_ones(self):
    # libjpeg's islow DCT: 8 x the orthonormal coefficients, measured max
    # error 0.16 (in orthonormal units) on these blocks; its inverse
    # rounds to integers, measured max error 0.59.
    rng = np.random.default_rng(1)
    blocks = rng.integers(-128, 128, (2000, 8, 8)).astype(np.int32)
    ref = np.asarray(jpeg_lib.block_dct(jnp.asarray(blocks, jnp.float32)))
    got = np.asarray(jpeg_lib.islow_fdct(jnp.asarray(blocks))) / 8.0
    self.assertLess(np.abs(got - ref).max(), 0.25)
    coeffs = np.round(ref).astype(np.int32)
    ref_inv = np.asarray(jpeg_lib.block_idct(jnp.asarray(coeffs,
                                                         jnp.float32)))
    got_inv = np.asarray(jpeg_lib.islow_idct(jnp.asarray(coeffs)))
    self.assertLess(np.abs(got_inv - ref_inv).max(), 0.75)


class TableTest(parameterized.TestCase):

  def test_quality_50_is_the_standard_tables(self):
    luma, chroma = jpeg_lib.quant_tables(50)
    # ITU T.81 K.1 / K.2, first row and first column of each.
    np.testing.assert_array_equal(luma[0], [16, 11, 10, 16, 24, 40, 51, 61])
    np.testing.assert_array_equal(luma[:, 0],
                                  [16, 12, 14, 14, 18, 24, 49, 72])
    np.testing.assert_array_equal(chroma[0],
                                  [17, 18, 24, 47, 99, 99, 99, 99])
    np.testing.assert_array_equal(chroma[:, 0],
                                  [17, 18, 24, 47, 99, 99, 99, 99])
    np.testing.assert_array_equal(luma, jpeg_lib.LUMA_TABLE)
    np.testing.assert_array_equal(chroma, jpeg_lib.CHROMA_TABLE)

  def test_scaling_at_10_and_75(self):
    # q 10: scale 5000 / 10 = 500 %; q 75: 200 - 150 = 50 %.
    self.assertEqual(jpeg_lib.quality_scale(10), 500)
    self.assertEqual(jpeg_lib.quality_scale(75), 50)
    luma10, chroma10 = jpeg_lib.quant_tables(10)
    np.testing.assert_array_equal(luma10[0],
                                  [80, 55, 50, 80, 120, 200, 255, 255])
    np.testing.assert_array_equal(chroma10[0],
                                  [85, 90, 120, 235, 255, 255, 255, 255])
    luma75, chroma75 = jpeg_lib.quant_tables(75)
    np.testing.assert_array_equal(luma75[0], [8, 6, 5, 8, 12, 20, 26, 31])
    np.testing.assert_array_equal(chroma75[0],
                                  [9, 9, 12, 24, 50, 50, 50, 50])
    for q, scale in ((10, 500), (75, 50)):
      for table, base in zip(jpeg_lib.quant_tables(q),
                             (jpeg_lib.LUMA_TABLE, jpeg_lib.CHROMA_TABLE)):
        np.testing.assert_array_equal(
            table, np.clip((base * scale + 50) // 100, 1, 255))
    self.assertTrue((jpeg_lib.quant_tables(100)[0] == 1).all())
    self.assertTrue((jpeg_lib.quant_tables(1)[1] == 255).all())

  def test_tables_are_those_pillow_writes(self):
    image = np.zeros((8, 8, 3), np.uint8)
    for q in range(1, 101):
      buf = io.BytesIO()
      Image.fromarray(image).save(buf, "JPEG", quality=q)
      written = Image.open(io.BytesIO(buf.getvalue())).quantization
      for i, table in enumerate(jpeg_lib.quant_tables(q)):
        np.testing.assert_array_equal(
            np.asarray(written[i]).reshape(8, 8), table, err_msg=f"q={q}")

  def test_bad_arguments(self):
    x = jnp.zeros((1, 8, 8, 3))
    for q in (0, 101):
      with self.assertRaises(ValueError):
        jpeg_lib.jpeg(x, q)
    with self.assertRaises(TypeError):
      jpeg_lib.jpeg(x, 50.0)
    with self.assertRaises(ValueError):
      jpeg_lib.jpeg(x, 50, rounding="floor")
    with self.assertRaises(ValueError):
      jpeg_lib.jpeg(jnp.zeros((1, 8, 8, 1)), 50)


class PillowMatchTest(parameterized.TestCase):

  def test_pillow_subsamples_chroma_2x2_at_every_quality(self):
    # The premise of jpeg(): pillow's default is 4:2:0 at any quality.
    from PIL import JpegImagePlugin  # pylint: disable=g-import-not-at-top
    image = smooth_images(1, 16, 16, 0)[0]
    for q in (1, 10, 50, 75, 90, 95, 100):
      buf = io.BytesIO()
      Image.fromarray(image).save(buf, "JPEG", quality=q)
      decoded = Image.open(io.BytesIO(buf.getvalue()))
      self.assertEqual(JpegImagePlugin.get_sampling(decoded), 2, f"q={q}")

  @parameterized.parameters(*QUALITIES)
  def test_synthetic_32x32(self, quality):
    images = np.concatenate([smooth_images(6, 32, 32, 0),
                             textured_images(6, 32, 32, 1)])
    assert_matches_pillow(self, images, quality)

  @parameterized.parameters(*QUALITIES)
  def test_sizes_not_a_multiple_of_16(self, quality):
    # Both sides odd (edge padding, the chroma planes' true size at the
    # upsampler); then a plane 2 wide, where libjpeg repeats samples.
    assert_matches_pillow(self, textured_images(6, 21, 27, 2), quality)
    assert_matches_pillow(self, textured_images(4, 7, 3, 3), quality)

  @parameterized.parameters(*QUALITIES)
  @absltest.skipUnless(os.path.isfile(CIFAR10),
                       "set UE_JAX_CIFAR10 to the CIFAR-10 image-folder tar "
                       "(train/<class>/*.jpg) to compare on real images")
  def test_cifar10(self, quality):
    assert_matches_pillow(self, jpeg_match.cifar10_images(CIFAR10, 200),
                          quality)

  def test_quality_100_is_close_to_identity(self):
    # Not exact: 4:2:0 halves the chroma and every stage rounds. Measured
    # on these images: mean 0.48 levels, max 4.
    images = smooth_images(16, 32, 32, 4)
    diff = np.abs(run_jpeg(images, 100) - images)
    self.assertLess(diff.mean(), 1.0)
    self.assertLessEqual(diff.max(), 6)
    self.assertGreater(np.abs(run_jpeg(images, 10) - images).mean(), 3.0)

  @absltest.skipUnless(os.path.isfile(CIFAR10),
                       "set UE_JAX_CIFAR10 to the CIFAR-10 image-folder tar")
  def test_quality_100_is_close_to_identity_on_cifar10(self):
    # Measured with pillow on 300 images: mean 0.59 levels.
    images = jpeg_match.cifar10_images(CIFAR10, 200)
    self.assertLess(np.abs(run_jpeg(images, 100) - images).mean(), 1.0)


def linear_round_trip(t):
  """The pipeline without its roundings, for tangents t [B, H, W, 3]
  (H, W even): RGB -> YCbCr, chroma 2x2 mean then the 9-3-3-1 upsampling,
  back to RGB (JFIF's decimal constants). The quantizer's straight-through
  identity makes DCT -> IDCT the identity."""
  to_ycc = np.array([[0.299, 0.587, 0.114],
                     [-0.168736, -0.331264, 0.5],
                     [0.5, -0.418688, -0.081312]])
  to_rgb = np.array([[1.0, 0.0, 1.402],
                     [1.0, -0.344136, -0.714136],
                     [1.0, 1.772, 0.0]])
  ycc = np.asarray(t, np.float64) @ to_ycc.T
  b, h, w, _ = ycc.shape
  small = ycc[..., 1:].reshape(b, h // 2, 2, w // 2, 2, 2).mean((2, 4))
  up = np.empty((b, h, w, 2))
  for oy in range(h):
    for ox in range(w):
      i, j = oy // 2, ox // 2
      i2 = min(max(i + (1 if oy % 2 else -1), 0), h // 2 - 1)
      j2 = min(max(j + (1 if ox % 2 else -1), 0), w // 2 - 1)
      up[:, oy, ox] = (9 * small[:, i, j] + 3 * small[:, i2, j] +
                       3 * small[:, i, j2] + small[:, i2, j2]) / 16
  return np.concatenate([ycc[..., :1], up], -1) @ to_rgb.T


class GradientTest(parameterized.TestCase):

  def mid_range(self):
    # No value near 0 or 255 at any stage: nothing clips.
    return jnp.asarray(smooth_images(4, 32, 32, 5), jnp.float32) / 510 + 0.25

  def test_straight_through_tangent_is_the_linear_pipeline(self):
    x = self.mid_range()
    t = jax.random.normal(jax.random.key(0), x.shape)
    _, tangent = jax.jvp(lambda v: jpeg_lib.jpeg(v, 10), (x,), (t,))
    chex.assert_trees_all_close(tangent, linear_round_trip(t).astype(
        np.float32), atol=2e-3)

  def test_gradient_passes_at_black_and_white(self):
    # A constant image's straight-through gradient is the linear
    # pipeline's, whatever the colour: values at exactly 0 or 255 are not
    # clipped (jnp.clip would halve the gradient there). At q 100 black
    # and white decode exactly (at q 50 white's DC step overshoots: 256).
    w = jax.random.normal(jax.random.key(2), (1, 16, 16, 3))
    grad = lambda level: jax.grad(lambda v: jnp.sum(
        jpeg_lib.jpeg(v, 100) * w))(jnp.full((1, 16, 16, 3), level / 255.0))
    gray = grad(128.0)
    chex.assert_trees_all_close(grad(255.0), gray, atol=1e-5)
    chex.assert_trees_all_close(grad(0.0), gray, atol=1e-5)

  @parameterized.parameters("ste", "smooth")
  def test_gradients_are_finite_and_non_zero_under_jit(self, rounding):
    x = jnp.asarray(textured_images(4, 32, 32, 6), jnp.float32) / 255.0
    target = jax.random.uniform(jax.random.key(1), x.shape)

    @jax.jit
    def loss_and_grad(v):
      loss = lambda v: jnp.mean((jpeg_lib.jpeg(v, 10, rounding=rounding) -
                                 target)**2)
      return jax.value_and_grad(loss)(v)

    loss, grad = loss_and_grad(x)
    chex.assert_tree_all_finite((loss, grad))
    chex.assert_shape(grad, x.shape)
    self.assertGreater(float(jnp.abs(grad).sum()), 0.0)
    # Non-zero for most pixels, each image and each channel.
    self.assertGreater(float(jnp.mean(grad != 0)), 0.5)
    self.assertTrue(bool(jnp.all(jnp.abs(grad).sum((1, 2)) > 0)))

  def test_smooth_changes_only_the_backward(self):
    x = jnp.asarray(textured_images(4, 32, 32, 7), jnp.float32) / 255.0
    chex.assert_trees_all_equal(jpeg_lib.jpeg(x, 10, rounding="ste"),
                                jpeg_lib.jpeg(x, 10, rounding="smooth"))
    grads = [jax.grad(lambda v, r=r: jpeg_lib.jpeg(v, 10, rounding=r).sum())(
        x) for r in ("ste", "smooth")]
    self.assertGreater(float(jnp.abs(grads[0] - grads[1]).max()), 1e-3)
    # The cubic's slope 3 (v - round v)^2 is at most 3/4 < 1: the
    # quantizer passes less than the straight-through identity.
    self.assertLess(float(jnp.abs(grads[1]).mean()),
                    float(jnp.abs(grads[0]).mean()))


class ConstantColourTest(parameterized.TestCase):

  @parameterized.product(quality=(10, 50, 75, 90, 100),
                         size=((16, 16), (13, 9)))
  def test_constant_colour_comes_back(self, quality, size):
    rng = np.random.default_rng(quality)
    colours = np.concatenate([
        rng.integers(0, 256, (40, 3)),
        [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255],
         [128, 128, 128], [127, 127, 127], [1, 254, 128]]]).astype(np.uint8)
    images = np.broadcast_to(colours[:, None, None, :],
                             (len(colours),) + size + (3,)).copy()
    out = run_jpeg(images, quality)
    # Every pixel the same colour, and pillow's.
    chex.assert_trees_all_equal(out, np.broadcast_to(out[:, :1, :1],
                                                     out.shape))
    np.testing.assert_array_equal(
        out, jpeg_match.pillow_round_trip(images, quality))
    err = np.abs(out[:, 0, 0] - colours.astype(np.int32)).max()
    if quality >= 90:
      self.assertLessEqual(err, 1)  # pillow's too, measured
    # Else the DC steps bound it: Y off by at most 1 + q_y / 16 (rounding
    # and half a step of q_y / 8 levels), Cb and Cr by 1 + q_c / 16, and
    # B = Y + 1.772 Cb', plus the last rounding.
    luma, chroma = jpeg_lib.quant_tables(quality)
    bound = 1.5 + luma[0, 0] / 16 + 1.772 * (1 + chroma[0, 0] / 16)
    self.assertLessEqual(err, bound)


if __name__ == "__main__":
  absltest.main()
