"""Image-folder trees as a dataset source (`data.source=folder`).

A source is a folder or a tar archive (`.tar`, `.tar.gz`, `.tgz`), read in
place: a tar is streamed once with Python's tarfile and never unpacked to
disk. `data.path` holds `train/<class>/...` and `test/<class>/...` (in a tar
they may sit inside one top-level folder); `data.train_path` and
`data.test_path` instead point at one class tree each (`<class>/...`, in a tar
optionally inside one top-level folder). Images may lie anywhere below their
class folder. Names starting with a dot are skipped, as are files whose
extension is not one of image_folder.EXTENSIONS.

Order and labels: the class index is the position of the class folder's name
in sorted order (as integers when every name is one, so "2" comes before
"10": image_folder.class_order); train and test must hold the same classes.
Within a split the examples follow their path below the split, compared part
by part (class first, then the path inside it), and an example's index is
its row in that order.

Pixels: every file is decoded upright by image_folder.decode, then taken as
RGB; alpha is dropped without compositing. When every image of both splits is
gray (L or LA) the dataset keeps one channel (the gray value, exactly), else
any gray image is repeated to three channels. `image_size` 0 asks every image
to have the first one's size (the first that differs is named); N > 0
resizes each image to N x N with pillow's bilinear filter (which averages
over the footprint when it shrinks), the aspect ratio not kept.

A tar is held in memory while it is decoded (its image members' bytes, about
the archive's size), and the decoded arrays are returned whole; `load` takes
them from folder_cache.py's cache when it holds them.
"""

import dataclasses
import hashlib
import os
import posixpath
import tarfile
import time
import zlib
from typing import Dict, FrozenSet, List, Optional, Tuple

import numpy as np
from absl import logging
from PIL import Image

from ue_jax.io import folder_cache
from ue_jax.io import image_folder as folder_lib
from ue_jax.runtime.errors import UEError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SPLITS = ("train", "test")
RESAMPLE = Image.Resampling.BILINEAR


@dataclasses.dataclass(frozen=True)
class Tree:
  """The non-hidden files and folders of a source, as '/'-separated paths
  relative to its root; `blobs` holds a tar's image bytes (None: a folder,
  read from disk)."""
  origin: str
  files: Tuple[str, ...]
  folders: FrozenSet[str]
  blobs: Optional[Dict[str, bytes]] = None

  def read(self, name: str) -> bytes:
    if self.blobs is not None:
      return self.blobs[name]
    with open(os.path.join(self.origin, *name.split("/")), "rb") as f:
      return f.read()


@dataclasses.dataclass(frozen=True)
class Split:
  """One split's image files (tree paths, in example order) and labels."""
  tree: Tree
  names: Tuple[str, ...]
  labels: np.ndarray
  classes: Tuple[str, ...]


def is_tar_name(path: str) -> bool:
  return path.lower().endswith(TAR_SUFFIXES)


def _hidden(name: str) -> bool:
  return any(part.startswith(".") for part in name.split("/"))


def _parents(name: str):
  parts = name.split("/")
  for i in range(1, len(parts)):
    yield "/".join(parts[:i])


def check_exists(path: str, field: str) -> None:
  """`path` names a folder or a tar archive; else a UEError."""
  if not os.path.exists(path):
    raise UEError(f"{field} {path} does not exist")
  if not os.path.isdir(path) and not is_tar_name(path):
    raise UEError(f"{field} {path} is neither a folder nor a "
                  f"{', '.join(TAR_SUFFIXES)} archive")


def walk_folder(root: str) -> List[Tuple[str, os.stat_result]]:
  """Every non-hidden file below `root` with its stat, sorted by path."""
  found = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    rel = os.path.relpath(folder, root).replace(os.sep, "/")
    for name in files:
      if not name.startswith("."):
        full = os.path.join(folder, name)
        try:
          stat = os.stat(full)
        except OSError as e:  # a dangling link, a file gone meanwhile
          raise UEError(f"{full} cannot be read "
                        f"({e.strerror or type(e).__name__})") from None
        found.append((name if rel == "." else f"{rel}/{name}", stat))
  return sorted(found, key=lambda item: item[0])


def fingerprint(path: str) -> str:
  """The sha256 (hex) of a source: a tar's bytes, a folder's listing."""
  h = hashlib.sha256()
  if os.path.isfile(path):
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return "tar:" + h.hexdigest()
  for name, stat in walk_folder(path):
    h.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return "folder:" + h.hexdigest()


def _open_folder(root: str) -> Tree:
  files = tuple(name for name, _ in walk_folder(root))
  folders = set()
  for folder, dirs, _ in os.walk(root):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    rel = os.path.relpath(folder, root).replace(os.sep, "/")
    if rel != ".":
      folders.add(rel)
  return Tree(root, files, frozenset(folders))


def member_name(raw: str, archive: str) -> str:
  """A tar member's path inside the tree; refuses one that would land
  outside it (absolute, or climbing out with '..')."""
  name = raw.replace("\\", "/")
  clean = posixpath.normpath(name)
  drive = len(name) > 1 and name[0].isalpha() and name[1] == ":" and (
      len(name) == 2 or name[2] == "/")  # C:/... from another system
  if name.startswith("/") or clean == ".." or clean.startswith("../") or (
      drive):
    raise UEError(f"{archive}: tar member {raw!r} points outside the tree "
                  "(an absolute path or '..'); refusing the archive")
  return "" if clean == "." else clean


def _open_tar(path: str) -> Tree:
  files, folders, blobs = [], set(), {}
  try:
    with tarfile.open(path, "r:*") as tar:
      for member in tar:
        name = member_name(member.name, path)
        if member.issym() or member.islnk():
          raise UEError(f"{path}: tar member {member.name!r} is a link; only "
                        "regular files and folders are read")
        if not name or _hidden(name):
          continue
        if member.isdir():
          folders.add(name)
        elif member.isfile():
          folders.update(_parents(name))
          if name not in blobs:
            files.append(name)
          blobs[name] = (tar.extractfile(member).read()
                         if folder_lib.is_image_name(name) else b"")
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise UEError(f"{path} is not a readable tar archive "
                  f"({type(e).__name__}: {' '.join(str(e).split())[:120]})"
                  ) from None
  return Tree(path, tuple(sorted(files)), frozenset(folders), blobs)


def open_tree(path: str) -> Tree:
  return _open_tar(path) if os.path.isfile(path) else _open_folder(path)


def _children(tree: Tree, prefix: str) -> List[str]:
  """The folder names directly below `prefix` ('' or 'a/b/')."""
  return sorted(f[len(prefix):] for f in tree.folders
                if f.startswith(prefix) and f.count("/") == prefix.count("/"))


def _loose_files(tree: Tree, prefix: str) -> List[str]:
  return [f for f in tree.files
          if f.startswith(prefix) and "/" not in f[len(prefix):]]


def _wrapper(tree: Tree, root_fits: bool, inner_fits) -> str:
  """'' or 'top/': a tar's single top-level folder when the content is
  inside it (`root_fits`: it is at the root; `inner_fits(prefix)`: whether
  it is below `prefix`)."""
  if root_fits or tree.blobs is None:
    return ""
  top = _children(tree, "")
  if len(top) == 1 and not _loose_files(tree, "") and inner_fits(
      top[0] + "/"):
    return top[0] + "/"
  return ""


def list_classes(tree: Tree, prefix: str, where: str):
  """[(class name, path below the class folder, tree path)] of the images
  below `prefix`, and the class names with at least one folder."""
  images, classes = [], set(_children(tree, prefix))
  loose = []
  for name in tree.files:
    if not name.startswith(prefix) or not folder_lib.is_image_name(name):
      continue
    rest = name[len(prefix):]
    if "/" not in rest:
      loose.append(name)
      continue
    cls, inside = rest.split("/", 1)
    images.append((cls, inside, name))
  if loose:
    raise UEError(f"{len(loose)} image(s) of {where} lie outside any class "
                  f"folder (e.g. {loose[0]}); put each class's images in a "
                  "folder named after the class")
  if not classes:
    raise UEError(f"{where} holds no class folders; expected <class>/<image> "
                  f"files with extensions {', '.join(folder_lib.EXTENSIONS)}")
  used = {cls for cls, _, _ in images}
  empty = sorted(classes - used)
  if empty:
    raise UEError(f"class folder {prefix}{empty[0]} of {tree.origin} holds no "
                  "image files (extensions "
                  f"{', '.join(folder_lib.EXTENSIONS)})")
  return images, folder_lib.class_order(classes)


def _split(tree: Tree, prefix: str, where: str) -> Split:
  images, classes = list_classes(tree, prefix, where)
  index = {c: i for i, c in enumerate(classes)}
  images.sort(key=lambda item: (index[item[0]], item[1].split("/")))
  labels = np.asarray([index[c] for c, _, _ in images], np.int32)
  return Split(tree, tuple(n for _, _, n in images), labels, classes)


def splits_of_root(path: str) -> Tuple[Split, Split]:
  """The train and test splits of a `data.path` source."""
  tree = open_tree(path)
  def fits(p):
    return f"{p}train" in tree.folders and f"{p}test" in tree.folders
  prefix = _wrapper(tree, fits(""), fits)
  for split in SPLITS:
    if f"{prefix}{split}" not in tree.folders:
      found = ", ".join(_children(tree, prefix)) or "nothing"
      raise UEError(f"data.path {path} holds no {split}/ folder (found: "
                    f"{found}); expected train/<class>/<image> and "
                    "test/<class>/<image>")
  return tuple(_split(tree, f"{prefix}{s}/", f"{path} ({s}/)")
               for s in SPLITS)


def split_of_tree(path: str, field: str) -> Split:
  """The split of a `data.train_path` / `data.test_path` class tree."""
  tree = open_tree(path)
  # One folder alone at the root is taken as a wrapper when it holds
  # folders itself (a tree of one class would be refused anyway).
  prefix = _wrapper(tree, len(_children(tree, "")) != 1,
                    lambda p: bool(_children(tree, p)))
  return _split(tree, prefix, f"{field} {path}")


def check_same_classes(train: Split, test: Split) -> None:
  if train.classes == test.classes:
    return
  missing = sorted(set(train.classes) - set(test.classes))
  extra = sorted(set(test.classes) - set(train.classes))
  parts = ([f"test lacks {', '.join(map(repr, missing))}"] if missing else []
           ) + ([f"test has {', '.join(map(repr, extra))}, which train "
                 "lacks"] if extra else [])
  raise UEError(f"the train and test class folders differ: {'; '.join(parts)}"
                f" (train {train.tree.origin}, test {test.tree.origin})")


class _Decoder:
  """Decodes the images of both splits to one size, as RGB, remembering
  whether every one was gray."""

  def __init__(self, image_size: int):
    self.image_size = image_size
    self.first = None  # (where, name, (w, h)) of the first image
    self.all_gray = True

  def picture(self, raw: bytes, where: str, name: str) -> np.ndarray:
    try:
      image, _ = folder_lib.decode(raw, name=name)
    except folder_lib.BadFile as e:
      raise UEError(f"{where}: {name} is unusable: {e}") from None
    self.all_gray &= image.mode in ("L", "LA")
    if image.mode != "RGB":
      image = image.convert("RGB")
    if self.image_size:
      image = image.resize((self.image_size, self.image_size), RESAMPLE)
    elif self.first is None:
      self.first = (where, name, image.size)
    elif image.size != self.first[2]:
      w, h = image.size
      w0, h0 = self.first[2]
      first = self.first[1] if where == self.first[0] else (
          f"{self.first[1]} of {self.first[0]}")
      raise UEError(f"{where}: {name} is {w}x{h} pixels, but the first image "
                    f"({first}) is {w0}x{h0}; give every image one size, or "
                    "set data.image_size=N to resize all to NxN")
    return np.asarray(image, np.uint8)

  def split(self, split: Split, where: str) -> np.ndarray:
    out = None
    for row, name in enumerate(split.names):
      try:
        raw = split.tree.read(name)
      except OSError as e:
        raise UEError(f"{where}: {name} cannot be read "
                      f"({e.strerror or type(e).__name__})") from None
      pixels = self.picture(raw, where, name)
      if out is None:
        out = np.empty((len(split.names), *pixels.shape), np.uint8)
      out[row] = pixels
    return out


def decode_splits(train: Split, test: Split, *, image_size: int
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """uint8 [N,H,W,C] images of both splits, C = 1 when all were gray."""
  decoder = _Decoder(image_size)
  images = [decoder.split(s, s.tree.origin) for s in (train, test)]
  if decoder.all_gray:
    images = [np.ascontiguousarray(x[..., :1]) for x in images]
  return images[0], images[1]


def sources(*, path: str = "", train_path: str = "", test_path: str = ""
            ) -> Dict[str, str]:
  """{role: source path} of the data fields (role: path, or train and
  test), each checked to exist."""
  if path and (train_path or test_path):
    raise UEError("data.source=folder takes data.path (a tree with train/ "
                  "and test/) or data.train_path and data.test_path (one "
                  "class tree each), not both")
  if path:
    check_exists(path, "data.path")
    return {"path": path}
  if not (train_path and test_path):
    raise UEError("data.source=folder needs data.path (a folder or tar "
                  "with train/<class>/* and test/<class>/*), or "
                  "data.train_path and data.test_path")
  check_exists(train_path, "data.train_path")
  check_exists(test_path, "data.test_path")
  return {"train": train_path, "test": test_path}


def scan(roles: Dict[str, str]) -> Tuple[Split, Split]:
  """The listed (not yet decoded) train and test splits of `sources`."""
  if "path" in roles:
    train, test = splits_of_root(roles["path"])
  else:
    train = split_of_tree(roles["train"], "data.train_path")
    test = split_of_tree(roles["test"], "data.test_path")
  check_same_classes(train, test)
  return train, test


def load(*, path: str = "", train_path: str = "", test_path: str = "",
         image_size: int = 0, cache_dir: str = "") -> Dict[str, np.ndarray]:
  """The arrays of folder_cache.KEYS for a folder source: from the cache
  when it holds them, else decoded (and then cached)."""
  roles = sources(path=path, train_path=train_path, test_path=test_path)
  shown = ", ".join(roles.values())
  t0 = time.perf_counter()
  folder = folder_cache.resolve_dir(cache_dir)
  cache_file = None if folder is None else folder_cache.file_for(
      folder, folder_cache.key({r: fingerprint(p) for r, p in roles.items()},
                               image_size))
  arrays = folder_cache.load(cache_file)
  if arrays is not None:
    logging.info("folder data %s: read from the cache %s (%.1f s)", shown,
                 cache_file, time.perf_counter() - t0)
    return arrays
  train, test = scan(roles)
  train_images, test_images = decode_splits(train, test,
                                            image_size=image_size)
  arrays = {"train_images": train_images, "train_labels": train.labels,
            "test_images": test_images, "test_labels": test.labels,
            "class_names": np.asarray(train.classes, dtype=str)}
  logging.info("folder data %s: decoded %d images in %.1f s", shown,
               len(train_images) + len(test_images),
               time.perf_counter() - t0)
  if folder_cache.save(cache_file, arrays):
    logging.info("folder data: cached as %s", cache_file)
  return arrays
