"""Robust search: the augmentations a trainer's defenses are drawn from
(gray, jpeg, strong, pool in core/augment.py) and the noise forms that
keep the noise in a subspace a defense leaves alone (luma, lowfreq,
luma_lowfreq in core/noise.py), checked on their math and inside the
noise and model steps."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from configs import common
from ue_jax.config import checks
from ue_jax.core import augment
from ue_jax.core import defenses
from ue_jax.core import jpeg as jpeg_lib
from ue_jax.core import noise as noise_lib
from ue_jax.core import steps
from ue_jax.io import data as data_lib
from ue_jax.runtime.errors import UEError
from tests import helpers

EPS, ALPHA = 8 / 255, 2 / 255


def images(b=16, h=12, w=12, c=3, seed=0, lo=0.0, hi=1.0):
  return jax.random.uniform(jax.random.key(seed), (b, h, w, c), minval=lo,
                            maxval=hi)


def rgb_dataset(n=32, size=12, lo=0, hi=256, seed=0):
  """A learnable 4-class RGB set whose pixels lie in [lo, hi)."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 4
  span = (hi - lo) / 2
  base = rng.random((n, size, size, 3)) * span
  pixels = lo + base + (labels * span / 3)[:, None, None, None]
  return data_lib.make_dataset(pixels.astype(np.uint8), labels, 4, "rgb")


class TransformTest(parameterized.TestCase):

  def test_gray_is_bt601_luma_on_the_drawn_images_only(self):
    x, key = images(), jax.random.key(1)
    out = augment.augment(key, x, kind="gray")
    picked = np.asarray(jax.random.bernoulli(key, augment.GRAY_P,
                                             (16, 1, 1, 1)))[:, 0, 0, 0]
    self.assertTrue(0 < picked.sum() < 16)  # both kinds occur
    gray = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])
    for i in range(16):
      if picked[i]:
        for ch in range(3):
          chex.assert_trees_all_close(out[i, ..., ch], gray[i], atol=1e-6)
      else:
        chex.assert_trees_all_equal(out[i], x[i])
    self.assertEqual(augment.GRAY_WEIGHTS, defenses.GRAY_WEIGHTS)
    chex.assert_trees_all_close(augment.luma(x), defenses.grayscale(x),
                                atol=1e-7)

  def test_jpeg_is_core_jpeg_at_the_drawn_quality(self):
    x = images(b=4, h=16, w=16)
    seen = set()
    for k in range(24):
      key = jax.random.key(k)
      q = augment.JPEG_QUALITIES[int(jax.random.randint(
          key, (), 0, len(augment.JPEG_QUALITIES)))]
      seen.add(q)
      if k < 6:
        chex.assert_trees_all_equal(
            jax.jit(lambda kk, xx: augment.augment(kk, xx, kind="jpeg"))(
                key, x), jpeg_lib.jpeg(x, q, rounding="ste"))
    self.assertEqual(seen, set(augment.JPEG_QUALITIES))

  def test_jpeg10_is_pillows_quality_10_on_every_batch(self):
    u8 = np.asarray(jax.random.randint(jax.random.key(3), (4, 16, 16, 3), 0,
                                       256), np.uint8)
    x = jnp.asarray(u8, jnp.float32) / 255.0
    for seed in range(3):
      got = augment.augment(jax.random.key(seed), x, kind="jpeg10")
      chex.assert_trees_all_close(got, jpeg_lib.jpeg(x, 10, rounding="ste"))
    # pillow's quality-10 JPEG of the same pixels, as the battery's defense
    want = defenses.jpeg_u8(u8, quality=10).astype(np.float32) / 255.0
    self.assertLess(float(jnp.abs(got - want).mean()), 2.0 / 255)

  def test_one_channel_jpeg_is_pillows_gray_jpeg(self):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (3, 12, 10, 1), np.uint8)
    for q in (10, 75):
      got = augment.jpeg_round_trip(jnp.asarray(u8, jnp.float32) / 255.0, q)
      want = defenses.jpeg_u8(u8, quality=q)
      np.testing.assert_array_equal(np.round(np.asarray(got) * 255.0), want)

  def test_jpeg_gradient_is_straight_through_inside_the_range(self):
    # d/dx sum(jpeg(x) * v) for the ste pipeline is linear in v and
    # nonzero; the drawn branch carries it.
    x = images(b=2, h=16, w=16, lo=0.2, hi=0.8)
    g = jax.grad(lambda im: jnp.sum(augment.augment(
        jax.random.key(0), im, kind="jpeg")))(x)
    self.assertTrue(bool(jnp.all(jnp.isfinite(g))))
    self.assertGreater(float(jnp.mean(g)), 0.5)  # sum is ~ preserved

  def test_resized_crop_of_the_whole_image_is_the_image(self):
    x = images(b=4)
    out = augment.random_resized_crop(jax.random.key(0), x, scale=(1.0, 1.0),
                                      ratio=(1.0, 1.0))
    chex.assert_trees_all_close(out, x, atol=1e-6)

  def test_crop_box_is_resized_bilinearly(self):
    # Bilinear resizing reproduces an affine ramp: box rows [2, 8) of a
    # ramp v = row, stretched to 12 rows: v = 2 + clip((i + .5) / 2 - .5,
    # 0, 5).
    ramp = jnp.broadcast_to(jnp.arange(12.0)[:, None, None], (12, 12, 1))
    out = augment._bilinear_crop(ramp, jnp.int32(2), jnp.int32(0),
                                 jnp.int32(6), jnp.int32(12))
    want = 2.0 + np.clip((np.arange(12) + 0.5) / 2 - 0.5, 0, 5)
    np.testing.assert_allclose(np.asarray(out[:, 3, 0]), want, atol=1e-5)

  def test_color_jitter_parts(self):
    x = images(b=8, lo=0.4, hi=0.6)  # no factor in [0.76, 1.24] clips it
    key = jax.random.key(2)
    one = functools.partial(augment.color_jitter, key, x, p=1.0)
    chex.assert_trees_all_close(one(brightness=0.0, contrast=0.0,
                                    saturation=0.0), x, atol=1e-7)
    # Brightness scales each image by one factor.
    b = one(brightness=0.24, contrast=0.0, saturation=0.0) / x
    chex.assert_trees_all_close(b, jnp.broadcast_to(b[:, :1, :1, :1],
                                                    b.shape), atol=1e-5)
    self.assertGreater(float(jnp.std(b[:, 0, 0, 0])), 1e-3)
    # Contrast keeps each image's mean luma.
    c = one(brightness=0.0, contrast=0.24, saturation=0.0)
    chex.assert_trees_all_close(jnp.mean(augment.luma(c), (1, 2, 3)),
                                jnp.mean(augment.luma(x), (1, 2, 3)),
                                atol=1e-5)
    self.assertGreater(float(jnp.max(jnp.abs(c - x))), 1e-3)
    # Saturation keeps each pixel's luma.
    s = one(brightness=0.0, contrast=0.0, saturation=0.24)
    chex.assert_trees_all_close(augment.luma(s), augment.luma(x), atol=1e-5)
    self.assertGreater(float(jnp.max(jnp.abs(s - x))), 1e-3)
    # p = 0 leaves every image as it was.
    chex.assert_trees_all_equal(augment.color_jitter(
        key, x, brightness=0.24, contrast=0.24, saturation=0.24, p=0.0), x)

  @parameterized.parameters(1, 3)
  def test_strong_keeps_shape_and_range(self, channels):
    x = images(b=16, c=channels)
    out = augment.augment(jax.random.key(4), x, kind="strong")
    self.assertEqual(out.shape, x.shape)
    self.assertGreaterEqual(float(out.min()), 0.0)
    self.assertLessEqual(float(out.max()), 1.0)
    self.assertGreater(float(jnp.max(jnp.abs(out - x))), 0.05)

  def test_pool_takes_one_transform_per_image(self):
    x, key = images(b=32), jax.random.key(5)
    out = augment.augment(key, x, kind="pool")
    choice_key, *keys = jax.random.split(key, len(augment.POOL) + 1)
    choice = np.asarray(augment.pool_choice(choice_key, 32))
    self.assertEqual(set(choice), set(range(len(augment.POOL))))
    each = [augment.augment(k, x, kind=name)
            for name, k in zip(augment.POOL, keys)]
    for i in range(32):
      chex.assert_trees_all_equal(out[i], each[choice[i]][i])

  @parameterized.parameters(*augment.ROBUST_KINDS)
  def test_gradients_are_finite(self, kind):
    x = images(b=8, h=16, w=16)
    g = jax.grad(lambda im: jnp.sum(jnp.sin(3.0 * augment.augment(
        jax.random.key(6), im, kind=kind))))(x)
    self.assertTrue(bool(jnp.all(jnp.isfinite(g))))
    self.assertGreater(float(jnp.max(jnp.abs(g))), 0.0)


class FormProjectionTest(parameterized.TestCase):

  @parameterized.parameters("luma", "lowfreq", "luma_lowfreq")
  def test_orthogonal_projection(self, form):
    p = noise_lib.form_projection(form, 5)  # 12 = 5 + 5 + 2: a cut block
    a, b = images(b=2, seed=1), images(b=2, seed=2)
    chex.assert_trees_all_close(p(p(a)), p(a), atol=1e-6)
    np.testing.assert_allclose(float(jnp.vdot(p(a), b)),
                               float(jnp.vdot(a, p(b))), rtol=1e-5)
    pa = np.asarray(p(a))
    if "luma" in form:
      np.testing.assert_allclose(pa, pa[..., :1].repeat(3, -1), atol=1e-7)
    if "lowfreq" in form:
      for r0, r1 in ((0, 5), (5, 10), (10, 12)):
        for c0, c1 in ((0, 5), (10, 12)):
          blk = pa[:, r0:r1, c0:c1]
          np.testing.assert_allclose(blk, np.broadcast_to(
              blk[:, :1, :1], blk.shape), atol=1e-6)
      if form == "lowfreq":  # the block mean, per channel
        np.testing.assert_allclose(pa[:, 10, 0], np.asarray(
            a)[:, 10:12, 0:5].mean((1, 2)), atol=1e-6)

  def test_rgb_is_no_projection(self):
    self.assertIsNone(noise_lib.form_projection("rgb"))
    with self.assertRaisesRegex(ValueError, "unknown noise form"):
      noise_lib.form_projection("hsv")


def _in_form(delta, x, form, block=4, eps=EPS):
  """(delta equals its projection at every pixel the [0, 1] clip can never
  have touched, the count of those pixels). Such a pixel has x in
  [eps, 1 - eps] in all its channels (luma) and at every pixel of its
  block (lowfreq)."""
  safe = (x >= eps + 1e-6) & (x <= 1 - eps - 1e-6)
  if "luma" in form:
    safe = jnp.broadcast_to(jnp.all(safe, -1, keepdims=True), safe.shape)
  if "lowfreq" in form:
    safe = noise_lib.block_mean(safe.astype(jnp.float32), block) > 1 - 1e-6
  proj = noise_lib.form_projection(form, block)(delta)
  gap = jnp.where(safe, jnp.abs(delta - proj), 0.0)
  return float(jnp.max(gap)), int(jnp.sum(safe))


class FormNoiseStepTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ds = rgb_dataset()  # pixels over 0..255: some clip, most not
    state = helpers.tiny_state(cls.ds)
    state, _ = jax.jit(steps.model_step)(state,
                                         data_lib.gather(cls.ds,
                                                         np.arange(32)))
    cls.state, cls.batch = state, data_lib.gather(cls.ds, np.arange(16))
    cls.x = noise_lib.to_float(cls.batch["image"])

  def run_step(self, **kw):
    fn = jax.jit(functools.partial(steps.noise_step, eps=EPS,
                                   step_size=ALPHA, **kw))
    return steps.batch_noise(fn(self.state, self.batch)[0], self.batch)

  @parameterized.parameters("luma", "lowfreq", "luma_lowfreq")
  def test_noise_stays_in_its_form_and_its_bound(self, form):
    delta = self.run_step(num_steps=6, form=form)
    self.assertLessEqual(float(jnp.max(jnp.abs(delta))), EPS + 1e-7)
    gap, safe = _in_form(delta, self.x, form)
    self.assertGreater(safe, self.x.size // 4)
    self.assertLess(gap, 1e-6)
    rgb = self.run_step(num_steps=6)
    rgb_gap, _ = _in_form(rgb, self.x, form)
    self.assertGreater(rgb_gap, 1e-3)  # the paper's noise is not of it
    self.assertGreater(float(jnp.max(jnp.abs(delta))), EPS - 1e-6)  # moved

  def test_one_step_is_the_sign_of_the_projected_gradient(self):
    got = self.run_step(num_steps=1, form="luma_lowfreq", form_block=3)
    loss = steps._eval_loss(self.state, self.batch["label"],
                            self.batch["mask"])
    g = jax.grad(loss)(self.x)
    p = noise_lib.form_projection("luma_lowfreq", 3)
    want = noise_lib.project(-ALPHA * jnp.sign(p(g)), self.x, eps=EPS)
    chex.assert_trees_all_close(got, want, atol=1e-7)

  def test_rgb_is_todays_step_bit_for_bit(self):
    for kw in ({}, dict(eot_augment="crop_flip", eot_samples=2)):
      default = self.run_step(num_steps=3, **kw)
      rgb = self.run_step(num_steps=3, form="rgb", form_block=7, **kw)
      chex.assert_trees_all_equal(default, rgb)
    # The traced program is the same, equation for equation.
    fn = lambda **kw: jax.make_jaxpr(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=2, **kw))(
            self.state, self.batch)
    self.assertEqual(str(fn()), str(fn(form="rgb")))
    off = steps.bound_steps(eps=EPS, step_size=ALPHA, num_steps=2,
                            form="rgb")[1]
    self.assertNotIn("form", off.keywords)
    on = steps.bound_steps(eps=EPS, step_size=ALPHA, num_steps=2,
                           form="luma", form_block=2)[1]
    self.assertEqual((on.keywords["form"], on.keywords["form_block"]),
                     ("luma", 2))

  def test_forms_under_eot_pool(self):
    delta = self.run_step(num_steps=2, form="luma", eot_augment="pool",
                          eot_samples=2)
    self.assertTrue(bool(jnp.all(jnp.isfinite(delta))))
    self.assertLessEqual(float(jnp.max(jnp.abs(delta))), EPS + 1e-7)
    gap, _ = _in_form(delta, self.x, "luma")
    self.assertLess(gap, 1e-6)
    self.assertGreater(float(jnp.max(jnp.abs(delta))), ALPHA / 2)

  def test_classwise_noise_keeps_the_form(self):
    ds = rgb_dataset(lo=20, hi=235)  # no pixel within eps of 0 or 255
    state = self.state.replace(noise=noise_lib.random_noise(
        jax.random.key(0), (4, 12, 12, 3), eps=EPS))
    fn = jax.jit(functools.partial(
        steps.noise_step, eps=EPS, step_size=ALPHA, num_steps=2,
        layout="classwise", form="luma_lowfreq"))
    new = fn(state, data_lib.gather(ds, np.arange(16)))[0].noise
    p = noise_lib.form_projection("luma_lowfreq", 4)
    chex.assert_trees_all_close(new, p(new), atol=1e-7)
    self.assertGreater(float(jnp.max(jnp.abs(new - state.noise))), 1e-3)


class RobustModelStepTest(absltest.TestCase):

  def test_model_step_trains_on_the_pool(self):
    ds = rgb_dataset()
    state = helpers.tiny_state(ds)
    batch = data_lib.gather(ds, np.arange(16))
    plain, _ = jax.jit(steps.model_step)(state, batch)
    pooled, m = jax.jit(functools.partial(steps.model_step,
                                          augment="pool"))(state, batch)
    self.assertTrue(np.isfinite(float(m["loss"])))
    moved = jax.tree.leaves(jax.tree.map(
        lambda a, b: jnp.max(jnp.abs(a - b)), pooled.params, plain.params))
    self.assertGreater(float(max(moved)), 1e-6)  # it saw other images


class RobustConfigTest(absltest.TestCase):

  def test_forms_need_pgd(self):
    cfg = common.base()
    cfg.noise.form = "luma"
    checks._search_rules(cfg)  # error_min: fine
    cfg.noise.kind = "lsp"
    with self.assertRaisesRegex(UEError, "noise.form='luma' shapes the PGD"):
      checks._search_rules(cfg)
    cfg.noise.kind, cfg.noise.form = "error_min", "hsv"
    with self.assertRaisesRegex(UEError, "unknown noise form 'hsv'"):
      checks.check_fields(cfg, checks.SCHEMA)

  def test_robust_kinds_are_choices_of_both_augment_fields(self):
    cfg = common.base()
    for kind in augment.ROBUST_KINDS:
      cfg.noise.eot_augment = cfg.generate.augment = kind
      checks.check_fields(cfg, checks.SCHEMA)


if __name__ == "__main__":
  absltest.main()
