"""Shortcut noise math (core/shortcuts.py): the AR recurrence, budgets,
filters, LSP blocks and the one-pixel search."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from ue_jax.core import shortcuts
from ue_jax.runtime.errors import UEError


def _ar_residual(x, b):
  """x[i, j] - sum_{(a, d) != (2, 2)} b[a, d] x[i - 2 + a, j - 2 + d] for
  i, j >= 2, computed in float64 independently of the generator."""
  x, b = np.asarray(x, np.float64), np.asarray(b, np.float64)
  _, h, w, _ = x.shape
  pred = np.zeros_like(x[:, 2:, 2:, :])
  for a in range(3):
    for d in range(3):
      if (a, d) != (2, 2):
        pred += b[:, a, d, None, None, :] * x[:, a:h - 2 + a, d:w - 2 + d, :]
  return x[:, 2:, 2:, :] - pred


class ARTest(parameterized.TestCase):

  @parameterized.parameters(1, 3)
  def test_samples_satisfy_their_class_recurrence(self, channels):
    filters = shortcuts.ar_candidates(jax.random.key(0), 4, channels)
    # Rows sum to one per channel, last entry zero (the AR paper's form).
    chex.assert_trees_all_close(jnp.sum(filters, axis=(1, 2)),
                                jnp.ones((4, channels)), atol=1e-5)
    chex.assert_trees_all_equal(filters[:, 2, 2, :],
                                jnp.zeros((4, channels)))
    labels = jnp.array([0, 1, 2, 3, 2, 0])
    raw = shortcuts.ar_process(jax.random.key(1), filters[labels], height=10,
                               width=12, crop=4)
    chex.assert_shape(raw, (6, 10, 12, channels))
    scale = np.abs(np.asarray(raw)).max()
    res = _ar_residual(raw, filters[labels])
    self.assertLess(np.abs(res).max(), 1e-5 * max(scale, 1.0))
    # Another class's filter does not explain the sample.
    other = _ar_residual(raw, filters[(labels + 1) % 4])
    self.assertGreater(np.abs(other).max(), 1e-2 * scale)

  def test_crop_keeps_the_tail_of_the_uncropped_process(self):
    filters = shortcuts.ar_candidates(jax.random.key(2), 2, 1)
    full = shortcuts.ar_process(jax.random.key(3), filters, height=9,
                                width=9, crop=0)
    cut = shortcuts.ar_process(jax.random.key(3), filters, height=7,
                               width=7, crop=2)
    chex.assert_trees_all_close(cut, full[:, 2:, 2:, :], rtol=1e-6)

  def test_linf_and_l2_budgets(self):
    filters = shortcuts.ar_candidates(jax.random.key(4), 3, 1)
    labels = jnp.array([0, 1, 2, 1])
    eps = 16 / 255
    d = shortcuts.ar_noise(jax.random.key(5), filters, labels, height=8,
                           width=8, eps=eps)
    chex.assert_trees_all_close(jnp.max(jnp.abs(d), axis=(1, 2, 3)),
                                jnp.full((4,), eps), rtol=1e-6)
    # L2: norm = l2_eps where no entry reaches eps; never above eps.
    big = shortcuts.ar_noise(jax.random.key(5), filters, labels, height=8,
                             width=8, eps=1.0, norm="l2", l2_eps=0.5)
    chex.assert_trees_all_close(jnp.sqrt(jnp.sum(big ** 2, axis=(1, 2, 3))),
                                jnp.full((4,), 0.5), rtol=1e-5)
    clipped = shortcuts.ar_noise(jax.random.key(5), filters, labels,
                                 height=8, width=8, eps=eps, norm="l2")
    self.assertLessEqual(float(jnp.max(jnp.abs(clipped))), eps + 1e-7)
    # Scaling is linear: the recurrence still holds after it.
    self.assertLess(np.abs(_ar_residual(d, filters[labels])).max(), 1e-6)

  def test_filters_distinct_reproducible_and_matched(self):
    kw = dict(height=8, width=8, crop=4, min_response=0.5, batch=64)
    a = shortcuts.ar_filters(jax.random.key(6), 4, 1, **kw)
    b = shortcuts.ar_filters(jax.random.key(6), 4, 1, **kw)
    chex.assert_trees_all_equal(a, b)
    chex.assert_shape(a, (4, 3, 3, 1))
    flat = np.asarray(a).reshape(4, -1)
    gaps = np.abs(flat[:, None] - flat[None]).max(-1)
    self.assertGreater(gaps[~np.eye(4, dtype=bool)].min(), 1e-3)
    raw = shortcuts.ar_process(jax.random.key(7), a, height=8, width=8)
    unit = shortcuts.scale(raw, eps=1.0, norm="l2", l2_eps=1.0)
    resp = np.asarray(shortcuts.ar_matched_response(a, unit))
    # Each filter's matched response to its own process is zero; to the
    # others', positive.
    np.testing.assert_allclose(np.diag(resp), 0.0, atol=1e-4)
    self.assertGreater(resp[~np.eye(4, dtype=bool)].min(), 1e-3)


  def test_running_out_of_candidates_is_a_user_error(self):
    # No candidate passes a response no filter reaches: one line (UEError),
    # not a ValueError traceback.
    with self.assertRaisesRegex(UEError, r"found only [01] of 4 AR filters "
                                r"in 16 candidates.*noise.kind"):
      shortcuts.ar_filters(jax.random.key(6), 4, 1, height=8, width=8,
                           min_response=1e9, batch=8, max_batches=2)


class LSPTest(absltest.TestCase):

  def test_blocks_budget_and_class_separation(self):
    labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
    eps = 16 / 255
    d = shortcuts.lsp_noise(jax.random.key(0), labels, 3, (10, 10, 1),
                            eps=eps, patch=4)
    chex.assert_shape(d, (8, 10, 10, 1))
    self.assertLessEqual(float(jnp.max(jnp.abs(d))), eps + 1e-7)
    d = np.asarray(d)
    # Constant within each 4 x 4 block (cut at the border).
    for i0 in range(0, 10, 4):
      for j0 in range(0, 10, 4):
        block = d[:, i0:i0 + 4, j0:j0 + 4, :]
        np.testing.assert_array_equal(
            block, np.broadcast_to(block[:, :1, :1, :], block.shape))
    # Same class: same block signs (class_sep 10 >> unit spread); classes
    # differ in some block.
    signs = np.sign(d[:, ::4, ::4, 0]).reshape(8, -1)
    np.testing.assert_array_equal(signs[0], signs[3])
    np.testing.assert_array_equal(signs[1], signs[4])
    self.assertTrue(np.any(signs[0] != signs[1]))

  def test_l2_budget(self):
    # With a wide clip, l2_eps sets the norm of every image exactly (the
    # published "LSP, L2 = 1" setting).
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    d = shortcuts.lsp_noise(jax.random.key(1), labels, 3, (8, 8, 3),
                            eps=1.0, patch=4, l2_eps=1.0)
    norms = jnp.sqrt(jnp.sum(d.reshape(6, -1) ** 2, axis=1))
    chex.assert_trees_all_close(norms, jnp.ones(6), rtol=1e-5)
    # l2_eps = 0 is eps * sqrt(H W C); l2_eps only rescales the direction.
    d0 = shortcuts.lsp_noise(jax.random.key(1), labels, 3, (8, 8, 3),
                             eps=0.1, patch=4)
    d1 = shortcuts.lsp_noise(jax.random.key(1), labels, 3, (8, 8, 3),
                             eps=0.1, patch=4, l2_eps=0.1 * np.sqrt(192))
    chex.assert_trees_all_close(d0, d1, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(jnp.clip(d * 0.1 * np.sqrt(192), -0.1, 0.1),
                                d0, rtol=1e-4, atol=1e-6)

  def test_class_centroids_are_distinct_vertices(self):
    # 2 x 2 blocks of one channel: 4 dimensions, 16 vertices. 16 classes
    # need every vertex once; independent draws would repeat one (for 16
    # classes, all but surely; for 4, a third of the keys).
    labels = jnp.tile(jnp.arange(16), 3)
    for seed in range(5):
      for classes in (4, 16):
        rows = labels[labels < classes]
        d = np.asarray(shortcuts.lsp_noise(jax.random.key(seed), rows,
                                           classes, (4, 4, 1), eps=0.1,
                                           patch=2))
        signs = np.sign(d[:, ::2, ::2, 0]).reshape(len(rows), -1)
        per_class = {tuple(signs[rows == k][0]) for k in range(classes)}
        self.assertLen(per_class, classes, (seed, classes))
        for k in range(classes):  # the class's images share its vertex
          np.testing.assert_array_equal(signs[rows == k],
                                        np.broadcast_to(signs[rows == k][0],
                                                        signs[rows == k].shape))

  def test_more_classes_than_vertices_are_refused(self):
    with self.assertRaisesRegex(UEError, r"17 classes.*16 distinct.*"
                                r"noise.lsp_patch"):
      shortcuts.lsp_noise(jax.random.key(0), jnp.arange(17), 17, (4, 4, 1),
                          eps=0.1, patch=2)


class OPSTest(absltest.TestCase):

  def test_score_is_mean_over_std_and_pick_is_greedy(self):
    rng = np.random.default_rng(0)
    images = rng.random((12, 3, 3, 1)).astype(np.float32)
    labels = np.arange(12) % 2
    # Class 0: pixel (1, 2) is always near 0.9 -> value 0 is far and steady.
    images[labels == 0, 1, 2, 0] = 0.9 + 0.01 * rng.random(6)
    scores = np.asarray(shortcuts.ops_scores(jnp.asarray(images),
                                             jnp.asarray(labels),
                                             num_classes=2))
    chex.assert_shape(scores, (2, 9, 2))
    for k in range(2):
      for p in range(9):
        for v in range(2):
          dist = np.abs(v - images[labels == k].reshape(-1, 9)[:, p])
          np.testing.assert_allclose(scores[k, p, v],
                                     dist.mean() / dist.std(), rtol=2e-3)
    picks = shortcuts.ops_pick(scores)
    np.testing.assert_array_equal(picks[0], [1 * 3 + 2, 0])
    # Class 1 may not take class 0's pair even if it scored best there.
    same = np.stack([scores[0], scores[0]])
    again = shortcuts.ops_pick(same)
    self.assertNotEqual(tuple(again[0]), tuple(again[1]))

  def test_noise_sets_one_pixel_to_the_value(self):
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.random((4, 5, 5, 3)), jnp.float32)
    labels = jnp.array([0, 1, 1, 0])
    picks = jnp.array([[7, 5], [24, 0]])  # value code 5 = (1, 0, 1)
    d = np.asarray(shortcuts.ops_noise(images, labels, picks))
    out = np.asarray(images) + d
    np.testing.assert_allclose(out[0, 1, 2], [1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(out[1, 4, 4], [0, 0, 0], atol=1e-6)
    changed = np.any(d != 0, axis=-1).sum(axis=(1, 2))
    self.assertLessEqual(changed.max(), 1)


if __name__ == "__main__":
  absltest.main()
