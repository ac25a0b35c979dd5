"""Shortcut kinds through the generate and release stages (pipeline.run on
tiny data): AR and LSP stay inside the integer eps-ball; OPS changes one
pixel per image, to an extreme value, through release.one_pixel only."""

import os
import tempfile

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from configs import test_tiny
from ue_jax import pipeline
from ue_jax.core import noise as noise_lib
from tests import helpers


def _config(tmp, **noise):
  train, test = helpers.write_npz(tmp)
  cfg = test_tiny.get_config()
  cfg.data.train_path, cfg.data.test_path = train, test
  cfg.noise.update(noise)
  return cfg, train


class ShortcutReleaseTest(parameterized.TestCase):

  @parameterized.parameters("ar", "lsp")
  def test_eps_bounded_kinds(self, kind):
    with tempfile.TemporaryDirectory() as tmp:
      cfg, train = _config(tmp, kind=kind, eps=16 / 255)
      out = pipeline.run(cfg, os.path.join(tmp, "w"),
                         stages=("generate", "release"))
      clean = np.load(train)["images"].astype(int)
      released = np.load(out["release_path"])["images"].astype(int)
      change = np.abs(released - clean)
      self.assertLessEqual(change.max(), noise_lib.max_delta_u8(16 / 255))
      # Every image carries noise (not a no-op release).
      self.assertTrue(np.all(change.reshape(len(clean), -1).max(1) > 0))

  def test_one_pixel_release(self):
    with tempfile.TemporaryDirectory() as tmp:
      cfg, train = _config(tmp, kind="ops")
      cfg.release.one_pixel = True
      out = pipeline.run(cfg, os.path.join(tmp, "w"),
                         stages=("generate", "release"))
      data = np.load(train)
      clean, labels = data["images"], data["labels"]
      released = np.load(out["release_path"])["images"]
      diff = np.any(released != clean, axis=-1)
      self.assertLessEqual(diff.sum(axis=(1, 2)).max(), 1)
      self.assertEqual(out["release_max_changed_pixels"], 1)
      # Same class: same pixel set to the same extreme value.
      for c in np.unique(labels):
        (row, col, code), = [p for k, p in enumerate(out["ops_pixels"])
                             if k == c]
        value = 255 * code
        np.testing.assert_array_equal(released[labels == c, row, col, 0],
                                      value)


if __name__ == "__main__":
  absltest.main()
