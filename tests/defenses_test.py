"""The battery's defenses: each one's math against an independent computation."""

import io
import os
import subprocess
import sys
import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest
from absl.testing import parameterized
from PIL import Image

from tests import helpers
from ue_jax.core import defended_step
from ue_jax.core import defenses
from ue_jax.core import noise as noise_lib
from ue_jax.evaluation import battery
from ue_jax.models import get_model


def labelled_constants(b=8):
  """Image i is constant i / b; its label is one-hot i (b classes)."""
  values = jnp.arange(b, dtype=jnp.float32) / b
  x = jnp.broadcast_to(values[:, None, None, None], (b, 10, 12, 1))
  return values, x, jnp.eye(b)


class MixingTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2, 3)
  def test_mixup_label_weights_are_the_image_weights(self, seed):
    values, x, y = labelled_constants()
    xm, ym = defenses.mixup(jax.random.key(seed), x, y)
    chex.assert_trees_all_close(ym.sum(-1), jnp.ones(8), atol=1e-6)
    # Every pixel of image i is sum_j w_ij * value_j with w_i its label.
    chex.assert_trees_all_close(xm[:, 0, 0, 0], ym @ values, atol=1e-6)
    chex.assert_trees_all_close(xm, jnp.broadcast_to(
        (ym @ values)[:, None, None, None], x.shape), atol=1e-6)

  @parameterized.parameters(0, 1, 2, 3, 4, 5)
  def test_cutmix_label_weight_is_the_pasted_area(self, seed):
    values, x, y = labelled_constants()
    key = jax.random.key(seed)
    lam, perm = defenses.mix_weights(key, 8)
    xc, yc = defenses.cutmix(key, x, y)
    del lam
    chex.assert_trees_all_close(yc.sum(-1), jnp.ones(8), atol=1e-6)
    for i in range(8):
      j = int(perm[i])
      if j == i:
        self.assertAlmostEqual(float(yc[i, i]), 1.0, places=6)
        continue
      pasted = float(jnp.mean(xc[i] == values[j]))
      self.assertAlmostEqual(float(yc[i, j]), pasted, places=6)
      self.assertAlmostEqual(float(yc[i, i]), 1.0 - pasted, places=6)
      # The pasted pixels form one rectangle.
      rows, cols = np.nonzero(np.asarray(xc[i, :, :, 0] == values[j]))
      if len(rows):
        self.assertEqual(len(rows), (np.ptp(rows) + 1) * (np.ptp(cols) + 1))

  def test_cutmix_area_follows_lambda_away_from_borders(self):
    # A box fully inside: area fraction = round(sqrt(1-lam) h)^2 / h^2.
    x = jnp.zeros((2, 40, 40, 1)).at[1].set(1.0)
    y = jnp.eye(2)
    box = (jnp.int32(5), jnp.int32(7), jnp.int32(10), jnp.int32(10))
    xc, yc = defenses.cutmix_with(x, y, jnp.array([1, 0]), box)
    self.assertAlmostEqual(float(yc[0, 1]), 100 / 1600, places=6)
    self.assertEqual(float(xc[0].sum()), 100.0)
    self.assertEqual(float(xc[0, 5:15, 7:17].min()), 1.0)


class PixelDefensesTest(parameterized.TestCase):

  def test_cutout_zeroes_exactly_the_chosen_square(self):
    x = jnp.ones((3, 9, 11, 2))
    centers = jnp.array([[4, 5], [0, 0], [8, 10]])
    out = np.asarray(defenses.cutout_at(x, centers, size=4))
    for i, (r, c) in enumerate(np.asarray(centers)):
      expected = np.ones((9, 11, 2))
      expected[max(r - 2, 0):max(r + 2, 0), max(c - 2, 0):max(c + 2, 0)] = 0
      np.testing.assert_array_equal(out[i], expected)
    # Random cutout: a rectangle of at most size^2 pixels, all channels.
    out = np.asarray(defenses.cutout(jax.random.key(0), jnp.ones(
        (16, 12, 12, 3))))
    for img in out:
      rows, cols = np.nonzero(img[..., 0] == 0)
      self.assertLessEqual(len(rows), 36)
      self.assertGreater(len(rows), 0)
      self.assertEqual(len(rows), (np.ptp(rows) + 1) * (np.ptp(cols) + 1))
      np.testing.assert_array_equal(img[..., 0], img[..., 2])

  @parameterized.parameters(1, 2, 3, 5)
  def test_bit_depth_leaves_exactly_2_to_the_b_levels(self, bits):
    ramp = jnp.linspace(0.0, 1.0, 4 * 251).reshape(4, 251, 1, 1)
    out = np.asarray(defenses.bit_depth(ramp, bits=bits))
    levels = np.unique(out)
    self.assertLen(levels, 2**bits)
    np.testing.assert_allclose(levels, np.arange(2**bits) / (2**bits - 1),
                               atol=1e-6)
    # The nearest level.
    self.assertLessEqual(float(np.abs(out - np.asarray(ramp)).max()),
                         0.5 / (2**bits - 1) + 1e-6)

  def test_blur_preserves_constants_and_the_mean(self):
    const = jnp.full((2, 8, 8, 3), 0.37)
    chex.assert_trees_all_close(defenses.gaussian_blur(const), const,
                                atol=1e-6)
    # With a zero margin of the kernel's radius no mass leaves the image.
    x = jnp.zeros((2, 10, 10, 1)).at[:, 1:-1, 1:-1].set(
        jax.random.uniform(jax.random.key(0), (2, 8, 8, 1)))
    out = defenses.gaussian_blur(x)
    chex.assert_trees_all_close(out.mean(), x.mean(), atol=1e-6)
    # Equal to a direct 2-D convolution with the outer-product kernel.
    k = defenses.gaussian_kernel(defenses.BLUR_SIGMA)
    k2 = np.outer(k, k)
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), "edge")
    ref = sum(k2[i, j] * xp[:, i:i + 10, j:j + 10] for i in range(3)
              for j in range(3))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-6)
    self.assertAlmostEqual(float(k.sum()), 1.0, places=6)
    self.assertGreater(k[1], k[0])

  def test_median_filter_matches_numpy_and_removes_an_impulse(self):
    x = jax.random.uniform(jax.random.key(1), (2, 6, 7, 2))
    out = np.asarray(defenses.median_filter(x))
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), "edge")
    ref = np.empty_like(out)
    for r in range(6):
      for c in range(7):
        ref[:, r, c] = np.median(xp[:, r:r + 3, c:c + 3].reshape(2, 9, 2), 1)
    np.testing.assert_allclose(out, ref, atol=1e-7)
    impulse = jnp.zeros((1, 5, 5, 1)).at[0, 2, 2, 0].set(1.0)
    self.assertEqual(float(defenses.median_filter(impulse).max()), 0.0)

  def test_gaussian_noise_is_the_keyed_draw_clipped(self):
    key = jax.random.key(3)
    x = jnp.full((4, 16, 16, 1), 0.5)
    out = defenses.gaussian_noise(key, x, std=0.05)
    expected = jnp.clip(x + 0.05 * jax.random.normal(key, x.shape), 0, 1)
    chex.assert_trees_all_close(out, expected, atol=1e-7)
    self.assertAlmostEqual(float(jnp.std(out - x)), 0.05, delta=0.005)

  def test_grayscale_is_bt601_luma(self):
    x = jnp.zeros((1, 2, 2, 3)).at[..., 0].set(1.0)  # pure red
    out = defenses.grayscale(x)
    chex.assert_trees_all_close(out, jnp.full((1, 2, 2, 3), 0.299),
                                atol=1e-6)
    self.assertAlmostEqual(sum(defenses.GRAY_WEIGHTS), 1.0, places=6)

  @parameterized.parameters((10, 1), (50, 1), (10, 3), (50, 3))
  def test_jpeg_equals_pillows_round_trip(self, quality, channels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28, channels), dtype=np.uint8)
    out = defenses.jpeg_u8(images, quality=quality)
    with tempfile.TemporaryDirectory() as tmp:
      for i, img in enumerate(images):
        path = os.path.join(tmp, f"{i}.jpg")
        Image.fromarray(np.squeeze(img, -1) if channels == 1 else img).save(
            path, quality=quality)
        ref = np.asarray(Image.open(path)).reshape(img.shape)
        np.testing.assert_array_equal(out[i], ref)
    self.assertEqual(out.dtype, np.uint8)
    # Lower quality loses more.
    err = lambda q: np.abs(defenses.jpeg_u8(images, quality=q).astype(int)
                           - images).mean()
    self.assertGreater(err(10), err(50))


  def test_gray_u8_is_rounded_bt601_luma(self):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    gray = defenses.gray_u8(images)
    chex.assert_shape(gray, (4, 8, 8, 1))
    r, g, b = (images[..., i].astype(float) for i in range(3))
    np.testing.assert_array_equal(
        gray[..., 0], np.round(0.299 * r + 0.587 * g + 0.114 * b))
    # Pillow's own conversion ("L", integer arithmetic) agrees within 1.
    pil = np.stack([np.asarray(Image.fromarray(img).convert("L"))
                    for img in images])
    self.assertLessEqual(np.abs(pil.astype(int) - gray[..., 0]).max(), 1)
    red = np.zeros((1, 1, 1, 3), np.uint8)
    red[..., 0] = 255
    self.assertEqual(int(defenses.gray_u8(red)[0, 0, 0, 0]), 76)  # 76.245

  def test_iss_is_gray_then_pillows_jpeg(self):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    out = defenses.iss_u8(images)
    chex.assert_shape(out, images.shape)
    self.assertEqual(out.dtype, np.uint8)
    for img, got in zip(images, out):
      buf = io.BytesIO()
      luma = defenses.gray_u8(img[None])[0, ..., 0]
      Image.fromarray(luma).save(buf, format="JPEG",
                                 quality=defenses.ISS_QUALITY)
      buf.seek(0)
      ref = np.asarray(Image.open(buf))
      for c in range(3):  # the same squeezed luma on every channel
        np.testing.assert_array_equal(got[..., c], ref)
    self.assertEqual(defenses.DATA_LEVEL["iss"], defenses.iss_u8)

  def test_grayscale_cell_greys_colour_batches(self):
    """The battery's grayscale transform on 3-channel batches: crop+flip,
    then one luma value on all 3 channels of every pixel."""
    key = jax.random.key(3)
    x = jax.random.uniform(key, (4, 32, 32, 3))
    y = jax.nn.one_hot(jnp.arange(4), 4)
    out, out_y = defenses.BATCH["grayscale"](key, x, y)
    chex.assert_shape(out, x.shape)
    chex.assert_trees_all_equal(out_y, y)
    chex.assert_trees_all_close(out[..., 0], out[..., 1], atol=0)
    chex.assert_trees_all_close(out[..., 0], out[..., 2], atol=0)
    self.assertGreater(float(jnp.std(x[..., 0] - x[..., 1])), 0.1)
    cropped = defenses.crop_flip(key, x)
    chex.assert_trees_all_close(out, defenses.grayscale(cropped), atol=1e-6)

  def test_colour_only_defenses_are_not_applicable_on_one_channel(self):
    for name in ("grayscale", "iss"):
      self.assertIn("1 channel", battery.not_applicable(name, (28, 28, 1)))
      self.assertEqual(battery.not_applicable(name, (32, 32, 3)), "")
    self.assertEqual(battery.not_applicable("jpeg10", (28, 28, 1)), "")


class StrongAugmentTest(absltest.TestCase):

  def test_ueraser_ops_stay_in_range_and_plasma_is_bounded(self):
    key = jax.random.key(0)
    x = jax.random.uniform(key, (8, 28, 28, 3))
    field = defenses.plasma(key, x.shape)
    self.assertLessEqual(float(jnp.abs(field).max()), 1.0 + 1e-6)
    for fn in (defenses.ueraser, defenses.trivial_op,
               defenses.plasma_brightness, defenses.plasma_contrast):
      out = fn(key, x)
      chex.assert_shape(out, x.shape)
      self.assertGreaterEqual(float(out.min()), 0.0)
      self.assertLessEqual(float(out.max()), 1.0)

  def test_channel_shuffle_permutes_each_pixels_channels(self):
    x = jax.random.uniform(jax.random.key(1), (16, 4, 4, 3))
    out = defenses.channel_shuffle(jax.random.key(2), x, p=1.0)
    chex.assert_trees_all_close(jnp.sort(out, -1), jnp.sort(x, -1))
    self.assertFalse(bool(jnp.all(out == x)))  # some image was shuffled
    one = x[..., :1]
    chex.assert_trees_all_equal(defenses.channel_shuffle(
        jax.random.key(2), one), one)


class DefendedStepTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.ds = helpers.synthetic(16, size=8, channels=1, classes=4)
    self.state = helpers.tiny_state(self.ds, noise=False)
    self.batch = {"image": jnp.asarray(self.ds.images),
                  "label": jnp.asarray(self.ds.labels)}

  def test_soft_cross_entropy_of_one_hot_is_the_usual_loss(self):
    logits = jax.random.normal(jax.random.key(0), (5, 4))
    labels = jnp.array([0, 3, 1, 2, 2])
    chex.assert_trees_all_close(
        defended_step.soft_cross_entropy(logits, jax.nn.one_hot(labels, 4)),
        optax.softmax_cross_entropy_with_integer_labels(logits, labels),
        atol=1e-6)

  def test_adversarial_inner_step_raises_the_loss_inside_the_ball(self):
    state = self.state
    x = noise_lib.to_float(self.batch["image"])
    y = jax.nn.one_hot(self.batch["label"], 4)

    def loss_fn(images):
      logits = state.apply_fn(state.variables, images, train=False)
      return jnp.sum(defended_step.soft_cross_entropy(logits, y))

    eps = 8 / 255
    adv = defended_step.adversarial(loss_fn, jax.random.key(0), x, eps=eps,
                                    steps=5, step_size=2.5 * eps / 5)
    self.assertGreater(float(loss_fn(adv)), float(loss_fn(x)))
    self.assertLessEqual(float(jnp.abs(adv - x).max()), eps + 1e-6)
    self.assertGreaterEqual(float(adv.min()), 0.0)
    self.assertLessEqual(float(adv.max()), 1.0)

  def test_max_loss_over_copies(self):
    state, batch = self.state, self.batch
    transform = defenses.BATCH["crop_flip"]
    _, m = defended_step.defended_step(state, batch, transform=transform,
                                       num_classes=4, copies=3)
    # The same copies by hand: keys as the step derives them.
    x = noise_lib.to_float(batch["image"])
    y = jax.nn.one_hot(batch["label"], 4)
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), 4)
    copies = [transform(k, x, y)[0] for k in keys[:3]]
    logits, _ = state.apply_fn(state.variables, jnp.concatenate(copies),
                               train=True, mutable=["batch_stats"])
    per_copy = defended_step.soft_cross_entropy(
        logits, jnp.tile(y, (3, 1))).reshape(3, 16)
    self.assertAlmostEqual(float(m["loss"]),
                           float(jnp.mean(jnp.max(per_copy, 0))), places=5)
    self.assertGreater(float(m["loss"]), float(jnp.mean(per_copy)))

  def test_plain_step_matches_model_step(self):
    from ue_jax.core import steps  # pylint: disable=g-import-not-at-top
    batch = {**self.batch, "index": jnp.arange(16),
             "mask": jnp.ones(16)}
    a, ma = defended_step.defended_step(
        self.state, batch, transform=defenses.BATCH["none"], num_classes=4)
    b, mb = steps.model_step(self.state, batch, augment="none")
    self.assertAlmostEqual(float(ma["loss"]), float(mb["loss"]), places=5)
    chex.assert_trees_all_close(a.params, b.params, atol=1e-5)


class ColourStandardizeTest(absltest.TestCase):
  """colour_standardize: moments per image and channel, the invariances
  that remove a colour offset, and where the battery applies it."""

  def setUp(self):
    super().setUp()
    key = jax.random.key(0)
    # Channels of different means and spreads in every image.
    self.x = (0.2 + 0.6 * jax.random.uniform(key, (6, 10, 12, 3))
              * jnp.asarray([1.0, 0.3, 0.05]))

  def test_zero_mean_unit_std_per_image_and_channel(self):
    out = defenses.colour_standardize(self.x)
    chex.assert_shape(out, self.x.shape)
    chex.assert_trees_all_close(out.mean(axis=(1, 2)), jnp.zeros((6, 3)),
                                atol=1e-5)
    chex.assert_trees_all_close(out.std(axis=(1, 2)), jnp.ones((6, 3)),
                                atol=1e-4)
    # An independent computation, image by image and channel by channel.
    x = np.asarray(self.x, np.float64)
    for i, c in ((0, 0), (3, 2), (5, 1)):
      ch = x[i, ..., c]
      np.testing.assert_allclose(np.asarray(out[i, ..., c]),
                                 (ch - ch.mean()) / ch.std(), atol=1e-4)

  def test_offset_and_positive_scale_are_removed(self):
    key = jax.random.key(1)
    offset = jax.random.uniform(key, (6, 1, 1, 3), minval=-0.5, maxval=0.5)
    scale = jax.random.uniform(jax.random.fold_in(key, 1), (6, 1, 1, 3),
                               minval=0.2, maxval=4.0)
    base = defenses.colour_standardize(self.x)
    for moved in (self.x + offset, self.x * scale, self.x * scale + offset):
      self.assertGreater(float(jnp.abs(moved - self.x).max()), 0.1)
      chex.assert_trees_all_close(defenses.colour_standardize(moved), base,
                                  atol=1e-4)

  def test_flat_channel_becomes_zero(self):
    x = self.x.at[2, ..., 1].set(0.7)
    out = defenses.colour_standardize(x)
    chex.assert_tree_all_finite(out)
    # 0 up to float32's error in the mean (~1e-7), over eps = 1e-3.
    chex.assert_trees_all_close(out[2, ..., 1], jnp.zeros((10, 12)),
                                atol=1e-3)

  def test_training_batches_standardize_before_crop_flip(self):
    """The battery's training transform is crop+flip of the standardized
    images: the padding is each channel's mean, so a per-image colour
    offset leaves the batch unchanged (padding raw images with zeros, then
    standardizing, would keep a trace of the offset at the border)."""
    y = jnp.eye(6)
    transform = defenses.BATCH["colour_standardize"]
    key = jax.random.key(4)
    offset = jnp.asarray([0.15, -0.1, 0.2])[None, None, None, :]
    out, out_y = transform(key, self.x, y)
    chex.assert_trees_all_equal(out_y, y)
    chex.assert_trees_all_close(
        out, defenses.crop_flip(key, defenses.colour_standardize(self.x)),
        atol=0)
    chex.assert_trees_all_close(transform(key, self.x + offset, y)[0], out,
                                atol=1e-4)
    after = defenses.colour_standardize(defenses.crop_flip(key, self.x))
    moved = defenses.colour_standardize(
        defenses.crop_flip(key, self.x + offset))
    self.assertGreater(float(jnp.abs(after - moved).max()), 0.1)
    self.assertEqual(defenses.TEST_BATCH["colour_standardize"],
                     defenses.colour_standardize)

  def test_eval_inputs_transforms_evaluation_mode_only(self):
    ds = helpers.synthetic(8, size=8, channels=3, classes=4)
    plain = helpers.tiny_state(ds, noise=False)
    x = noise_lib.to_float(jnp.asarray(ds.images))
    wrapped = defenses.EvalInputs(
        get_model("small_cnn_avg", num_classes=4, width=4),
        defenses.colour_standardize)
    # Same parameters as the plain model (init sees zeros either way).
    variables = wrapped.init(jax.random.key(0), x, train=False)
    chex.assert_trees_all_equal_shapes(variables["params"],
                                       plain.params)
    v = plain.variables
    chex.assert_trees_all_close(
        wrapped.apply(v, x, train=False),
        plain.apply_fn(v, defenses.colour_standardize(x), train=False),
        atol=1e-6)
    got, _ = wrapped.apply(v, x, train=True, mutable=["batch_stats"])
    want, _ = plain.apply_fn(v, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(got, want, atol=1e-6)


class HistogramEqualizeTest(absltest.TestCase):
  """equalize_u8 against the formula computed pixel by pixel, and the
  properties of an equalization."""

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(5)
    # Low contrast: levels 90..130 (red), 40..60 (green), 150..230 (blue).
    lo, hi = np.array([90, 40, 150]), np.array([131, 61, 231])
    self.images = rng.integers(lo, hi, (5, 16, 16, 3)).astype(np.uint8)

  def test_matches_the_formula(self):
    out = defenses.equalize_u8(self.images)
    chex.assert_shape(out, self.images.shape)
    self.assertEqual(out.dtype, np.uint8)
    for i, c in ((0, 0), (2, 1), (4, 2)):
      ch = self.images[i, ..., c].astype(int)
      cdf = (ch.ravel()[None, :] <= np.arange(256)[:, None]).sum(1)
      cdf_min = (ch == ch.min()).sum()
      want = np.floor(255 * (cdf[ch] - cdf_min) / (ch.size - cdf_min) + 0.5)
      np.testing.assert_array_equal(out[i, ..., c], want)
    # Chunks change nothing.
    np.testing.assert_array_equal(
        defenses.equalize_u8(self.images, chunk=2), out)
    self.assertIs(defenses.DATA_LEVEL["histogram_equalize"],
                  defenses.equalize_u8)
    self.assertIn("histogram_equalize", defenses.TEST_DATA_LEVEL)

  def test_low_contrast_image_uses_the_full_range(self):
    out = defenses.equalize_u8(self.images)
    self.assertLessEqual(int(np.ptp(self.images, axis=(1, 2)).max()), 80)
    chex.assert_trees_all_equal(out.min(axis=(1, 2)),
                                np.zeros((5, 3), np.uint8))
    chex.assert_trees_all_equal(out.max(axis=(1, 2)),
                                np.full((5, 3), 255, np.uint8))

  def test_monotone_map_of_levels(self):
    out = defenses.equalize_u8(self.images)
    for i in range(5):
      for c in range(3):
        level, mapped = self.images[i, ..., c].ravel(), out[i, ..., c].ravel()
        order = np.argsort(level, kind="stable")
        # One output per input level, never decreasing with the level.
        self.assertTrue(np.all(np.diff(mapped[order].astype(int)) >= 0))
        for v in np.unique(level):
          self.assertLen(np.unique(mapped[level == v]), 1)

  def test_idempotent_up_to_rounding(self):
    once = defenses.equalize_u8(self.images)
    twice = defenses.equalize_u8(once)
    self.assertLessEqual(int(np.abs(twice.astype(int) - once).max()), 1)
    # Exactly, where no two levels share an output level.
    spread = np.repeat(np.arange(0, 256, 8, dtype=np.uint8), 8)
    img = np.random.default_rng(0).permutation(spread).reshape(1, 16, 16, 1)
    once = defenses.equalize_u8(img)
    np.testing.assert_array_equal(defenses.equalize_u8(once), once)

  def test_channel_offset_and_integer_scale_change_nothing(self):
    base = defenses.equalize_u8(self.images)
    offset = np.array([-80, 150, 20], np.int64)  # stays inside [0, 255]
    moved = (self.images.astype(np.int64) + offset).astype(np.uint8)
    np.testing.assert_array_equal(defenses.equalize_u8(moved), base)
    half = self.images // 2  # doubling is one-to-one on these levels
    doubled = (half.astype(np.int64) * 2).astype(np.uint8)
    np.testing.assert_array_equal(defenses.equalize_u8(doubled),
                                  defenses.equalize_u8(half))

  def test_flat_channel_is_left_alone(self):
    img = self.images.copy()
    img[1, ..., 2] = 77
    out = defenses.equalize_u8(img)
    np.testing.assert_array_equal(out[1, ..., 2], img[1, ..., 2])


_SHARDED_COPIES = """
import functools, re
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_num_cpu_devices", 2)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tests import helpers
from ue_jax.core import defended_step, defenses
ds = helpers.synthetic(16, size=8, channels=1, classes=4)
state = helpers.tiny_state(ds, noise=False)
batch = {"image": jnp.asarray(ds.images), "label": jnp.asarray(ds.labels)}
step = jax.jit(functools.partial(
    defended_step.defended_step, transform=defenses.BATCH["ueraser"],
    num_classes=4, copies=2))
mesh = Mesh(jax.devices(), ("data",))
rows, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
one = step(state, batch)[1]["loss"]
state2 = jax.device_put(state, rep)
batch2 = jax.device_put(batch, rows)
hlo = step.lower(state2, batch2).compile().as_text()
print("GATHERS", len(re.findall(r" all-gather(-start)?[(]", hlo)))
from ue_jax.parallel import collectives
print("UNORDERED", len(collectives.unordered(hlo)))
for _ in range(30):  # a deadlock would hang here (the test's timeout)
  state2, m = step(state2, batch2)
print("LOSS", float(one), float(step(jax.device_put(state, rep), batch2)[1]["loss"]))
"""


class ShardedCopiesTest(absltest.TestCase):

  def test_copies_keep_the_row_sharding(self):
    # UEraser's copies on a 2-device CPU mesh: no all-gather in the step
    # (two independent ones, images and labels, deadlocked XLA:CPU within
    # a few steps), 30 steps finish, and the loss is the one-device loss.
    env = dict(os.environ, XLA_FLAGS=(
        "--xla_cpu_collective_call_warn_stuck_timeout_seconds=10 "
        "--xla_cpu_collective_call_terminate_timeout_seconds=20"))
    proc = subprocess.run([sys.executable, "-c", _SHARDED_COPIES],
                          cwd=helpers.REPO, env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
               if line.startswith(("GATHERS", "UNORDERED", "LOSS")))
    self.assertEqual(int(out["GATHERS"]), 0)
    self.assertEqual(int(out["UNORDERED"]), 0)
    one, two = (float(v) for v in out["LOSS"].split())
    self.assertAlmostEqual(one, two, places=5)


if __name__ == "__main__":
  absltest.main()
