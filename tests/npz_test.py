"""npz.StreamWriter on a Fortran-ordered array: stored in C order (np.savez
keeps Fortran order), the same array when loaded or mapped."""

import io
import os
import zipfile

import numpy as np
from absl.testing import absltest

from ue_jax.io import npz


def header(data: bytes) -> dict:
  stream = io.BytesIO(data)
  version = np.lib.format.read_magic(stream)
  shape, fortran, dtype = (np.lib.format.read_array_header_1_0(stream)
                           if version == (1, 0) else
                           np.lib.format.read_array_header_2_0(stream))
  return {"shape": shape, "fortran_order": fortran, "dtype": dtype}


class FortranOrderTest(absltest.TestCase):

  def test_written_in_c_order(self):
    tmp = self.create_tempdir().full_path
    array = np.asfortranarray(
        np.arange(24, dtype=np.int32).reshape(4, 6) * 7)
    ours, theirs = (os.path.join(tmp, f) for f in ("ours.npz", "np.npz"))
    with npz.StreamWriter(ours) as out:
      out.add("a", array)
    np.savez(theirs, a=array)
    with zipfile.ZipFile(ours) as z:
      self.assertFalse(header(z.read("a.npy"))["fortran_order"])
      self.assertEqual(z.read("a.npy")[-array.nbytes:],
                       np.ascontiguousarray(array).tobytes())
    with zipfile.ZipFile(theirs) as z:
      self.assertTrue(header(z.read("a.npy"))["fortran_order"])
    with np.load(ours) as loaded:
      np.testing.assert_array_equal(loaded["a"], array)
    mapped = npz.member(ours, "a")
    np.testing.assert_array_equal(mapped[1:3], array[1:3])


if __name__ == "__main__":
  absltest.main()
