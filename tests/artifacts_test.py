"""Atomic artifact writers: the files they leave behind."""

import os
import stat

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from ue_jax.io import artifacts


def write_each(folder):
  """Writes one file through every atomic writer; returns their paths."""
  paths = [artifacts.save_json(os.path.join(folder, "a.json"), {"a": 1}),
           artifacts.save_text(os.path.join(folder, "a.md"), "a\n"),
           artifacts.save_npy(os.path.join(folder, "a.npy"), np.zeros(3))]
  with artifacts.NpyWriter(os.path.join(folder, "b.npy"), (2, 3),
                           np.float32) as out:
    out.write(0, np.ones((2, 3), np.float32))
  with artifacts.NpzWriter(os.path.join(folder, "b.npz")) as out:
    out.add("labels", np.arange(4))
  return paths + [out.path, os.path.join(folder, "b.npy")]


class ModeTest(parameterized.TestCase):

  @parameterized.parameters((0o022, 0o644), (0o002, 0o664), (0o077, 0o600))
  def test_files_get_the_umask_mode(self, umask, mode):
    # A shared release must be readable by the group and others that the
    # umask lets read it, as any file the user makes (mkstemp's 0600 is not).
    previous = os.umask(umask)
    try:
      folder = self.create_tempdir().full_path
      paths = write_each(folder)
    finally:
      os.umask(previous)
    self.assertLen(paths, 5)
    for path in paths:
      self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), mode, path)
    self.assertEqual(sorted(os.listdir(folder)),
                     sorted(os.path.basename(p) for p in paths))

  def test_a_failed_write_leaves_nothing(self):
    folder = self.create_tempdir().full_path

    def fail(tmp):
      del tmp
      raise OSError("disk full")

    with self.assertRaises(OSError):
      # pylint: disable-next=protected-access
      artifacts._atomic(os.path.join(folder, "x.json"), fail)
    self.assertEqual(os.listdir(folder), [])


if __name__ == "__main__":
  absltest.main()
