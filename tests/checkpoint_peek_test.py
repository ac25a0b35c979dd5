"""checkpoint.peek_latest: the checkpoint a run would resume and its
metadata, found through Orbax's API without writing anything."""

import os

import chex
from absl.testing import absltest

from tests import helpers
from ue_jax.io import checkpoint as checkpoint_lib


def tree_snapshot(root):
  """{path: (size, mtime)} of everything under `root`."""
  out = {}
  for folder, names, files in os.walk(root):
    for name in names + files:
      info = os.stat(os.path.join(folder, name))
      out[os.path.join(folder, name)] = (info.st_size, info.st_mtime_ns)
  return out


class PeekTest(chex.TestCase):

  def test_latest_and_its_metadata(self):
    root = self.create_tempdir().full_path
    folder = os.path.join(root, "checkpoints")
    self.assertIsNone(checkpoint_lib.peek_latest(folder))  # no folder
    self.assertFalse(os.path.exists(folder))
    os.makedirs(folder)
    self.assertIsNone(checkpoint_lib.peek_latest(folder))  # empty
    state = helpers.tiny_state(helpers.synthetic(n=8))
    ckpt = checkpoint_lib.Checkpoints(folder, max_to_keep=2)
    for r in range(1, 4):
      ckpt.save(state, {"round": r, "devices": 2}, where="(test)")
    ckpt.close()
    # A save killed before Orbax renamed it: not a finished checkpoint.
    os.makedirs(os.path.join(folder, "4.orbax-checkpoint-tmp-1"))
    before = tree_snapshot(root)
    self.assertEqual(checkpoint_lib.peek_latest(folder),
                     (3, {"round": 3, "devices": 2}))
    self.assertEqual(tree_snapshot(root), before)  # nothing written
    # The same checkpoint and metadata as the run's own manager resumes.
    reopened = checkpoint_lib.Checkpoints(folder, max_to_keep=2)
    self.assertEqual(reopened.latest(), 3)
    self.assertEqual(reopened.meta(3), {"round": 3, "devices": 2})
    reopened.close()

  def test_unreadable_metadata_is_none(self):
    root = self.create_tempdir().full_path
    os.makedirs(os.path.join(root, "7"))  # numbered, but no checkpoint
    before = tree_snapshot(root)
    self.assertIsNone(checkpoint_lib.peek_latest(root))
    self.assertEqual(tree_snapshot(root), before)


if __name__ == "__main__":
  absltest.main()
