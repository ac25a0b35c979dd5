""".npz archives a row at a time: memory-mapped reading and streamed writing.

`np.savez` stores each array as an uncompressed (ZIP_STORED) `.npy` member,
so a member's data lies contiguously in the file: `member` maps one without
reading it (rows are read when indexed), and `StreamWriter` writes one from
chunks of rows. It always writes C order (`fortran_order: False`, rows one
after another). For C-ordered arrays its output is what `np.savez` writes
(the same zip layout, members, .npy headers and bytes; only the zip
timestamps can differ, as between two `np.savez` calls); a Fortran-ordered
array, which `np.savez` stores in Fortran order, is stored in C order
instead: other header and bytes, the same array to `np.load`. Compressed
members (`np.savez_compressed`) cannot be mapped: `member` returns None for
them and callers read them whole.
"""

import struct
import zipfile
from typing import Optional

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip local file header
_LOCAL_MAGIC = b"PK\x03\x04"


def member(path: str, key: str) -> Optional[np.ndarray]:
  """Array `key` of the .npz at `path` as a read-only memory map, or None
  when it cannot be mapped (compressed, or not a `key`.npy member): read it
  with np.load then. Raises ValueError for an array that needs pickle
  (object dtype) and OSError/zipfile.BadZipFile for a file that is not a
  readable archive."""
  with zipfile.ZipFile(path) as archive:
    try:
      info = archive.getinfo(key + ".npy")
    except KeyError:
      return None
    if info.compress_type != zipfile.ZIP_STORED:
      return None
  with open(path, "rb") as f:
    f.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if fields[0] != _LOCAL_MAGIC:
      raise zipfile.BadZipFile(f"{path}: bad local header of {key}.npy")
    name_len, extra_len = fields[-2:]
    f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
      raise ValueError(f"{key} holds Python objects, which need pickle")
    offset = f.tell()
  count = int(np.prod(shape, dtype=np.int64))
  if count == 0:
    return np.zeros(shape, dtype)
  return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                   order="F" if fortran else "C")


class StreamWriter:
  """Writes an .npz member by member, as `np.savez(path, **arrays)` would
  (every member in C order): `add(key, array)` for a whole array, or
  `begin(key, shape, dtype)`, then `write(rows)` in order until the rows
  are complete. Use as a context manager on an open binary file or a
  path."""

  def __init__(self, file):
    self.file = file
    self.archive, self.out, self.left = None, None, 0

  def __enter__(self):
    self.archive = zipfile.ZipFile(self.file, mode="w",
                                   compression=zipfile.ZIP_STORED,
                                   allowZip64=True)
    return self

  def add(self, key: str, array):
    array = np.asanyarray(array)
    self.begin(key, array.shape, array.dtype)
    self.write(array)

  def begin(self, key: str, shape, dtype):
    if self.out is not None:
      raise ValueError(f"{self.left} rows of the previous member are missing")
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    if dtype.hasobject:
      raise ValueError("object arrays are not written (they need pickle)")
    self.out = self.archive.open(key + ".npy", "w", force_zip64=True)
    header = {"descr": np.lib.format.dtype_to_descr(dtype),
              "fortran_order": False, "shape": shape}
    try:  # the version np.save picks: 1.0 unless the header is too long
      np.lib.format.write_array_header_1_0(self.out, header)
    except ValueError:
      np.lib.format.write_array_header_2_0(self.out, header)
    self.dtype, self.tail = dtype, shape[1:]
    self.left = shape[0] if shape else 1
    if not shape:
      self.tail = None
    self._close_if_done()

  def write(self, rows):
    rows = np.asarray(rows, self.dtype)
    if self.tail is not None and rows.shape[1:] != self.tail:
      raise ValueError(f"rows of shape {rows.shape[1:]}, expected "
                       f"{self.tail}")
    count = len(rows) if self.tail is not None else 1
    if count > self.left:
      raise ValueError(f"{count} rows given, {self.left} left")
    self.out.write(np.ascontiguousarray(rows).tobytes("C"))
    self.left -= count
    self._close_if_done()

  def _close_if_done(self):
    if self.left == 0:
      self.out.close()
      self.out = None

  def __exit__(self, kind, value, traceback):
    if self.out is not None:
      self.out.close()
      self.out = None
      if kind is None:
        self.archive.close()
        raise ValueError("the last member was left incomplete")
    self.archive.close()
