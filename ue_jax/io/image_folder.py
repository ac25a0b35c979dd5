"""Folders of image files: labels, reading, resizing and lossless writing.

A folder is labelled either by its layout (one subfolder per class, the
images anywhere below it: torchvision's ImageFolder) or by a CSV file of
`file,label` rows (paths relative to the folder, an optional header row).
Image files are those pillow reads with the extensions in `EXTENSIONS`;
other files are listed as ignored, hidden files and folders (a leading dot)
are skipped.

Every image is read upright (the EXIF orientation applied, `exif_transpose`)
in one of the modes L, LA, RGB, RGBA; a palette or 1-bit image is converted
to the nearest of them (RGB(A) or L) and recorded so, other modes (16-bit,
CMYK, ...) are refused per file. An image that cannot be decoded is a
`BadFile` naming the reason. Protected copies are written as PNG (lossless)
to a temporary name in their folder, fsynced and renamed, so a file at its
final name is always complete.
"""

import csv
import dataclasses
import hashlib
import io
import os
import re
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from PIL import ImageOps

from ue_jax.runtime.errors import UEError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
MODES = ("L", "LA", "RGB", "RGBA")
CONVERTED = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB",
             "YCbCr": "RGB", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}
TEMP_PREFIX = ".tmp-ue_jax-"
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}
_UMASK = os.umask(0)
os.umask(_UMASK)
Image.MAX_IMAGE_PIXELS = 1 << 28  # 268 Mpixel; beyond, pillow refuses


class BadFile(Exception):
  """An image file that cannot be read or used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One image: its path and its output path (relative, '/'-separated)."""
  path: str
  output: str
  label: int


@dataclasses.dataclass(frozen=True)
class Listing:
  """The labelled images of a folder in sorted order, and what was not."""
  root: str
  entries: Tuple[Entry, ...]
  classes: Tuple[str, ...]
  ignored: Tuple[str, ...]


@dataclasses.dataclass
class Picture:
  """A decoded image: pixels uint8 [H, W, C] (C = len(mode)), the mode of
  the file and the mode used (they differ for a converted palette image),
  the file's sha256 and its ICC profile (kept in the copy)."""
  pixels: np.ndarray
  mode: str
  file_mode: str
  sha256: str
  icc: Optional[bytes] = None

  @property
  def size(self) -> Tuple[int, int]:
    return self.pixels.shape[1], self.pixels.shape[0]

  @property
  def color(self) -> np.ndarray:
    """The color channels (alpha dropped)."""
    return self.pixels[..., :3] if self.mode.startswith("RGB") else (
        self.pixels[..., :1])

  @property
  def alpha(self) -> Optional[np.ndarray]:
    return self.pixels[..., -1:] if self.mode.endswith("A") else None


def _walk(root: str) -> List[str]:
  """Every non-hidden file below `root`, relative, sorted."""
  found = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    rel = os.path.relpath(folder, root)
    for name in sorted(files):
      if not name.startswith("."):
        found.append(name if rel == "." else f"{rel}/{name}".replace(
            os.sep, "/"))
  return sorted(found)


def is_image_name(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in EXTENSIONS


def output_name(path: str) -> str:
  """The protected copy's relative path: the same name, as .png."""
  return os.path.splitext(path)[0] + ".png"


def read_csv_labels(path: str) -> Dict[str, str]:
  """{relative file: label} from `file,label` rows (header row optional)."""
  if not os.path.isfile(path):
    raise UEError(f"--labels {path} is not a file")
  labels = {}
  with open(path, newline="", encoding="utf-8") as f:
    for number, row in enumerate(csv.reader(f), 1):
      if not row or not "".join(row).strip():
        continue
      if len(row) != 2:
        raise UEError(f"--labels {path} line {number}: expected `file,label`, "
                      f"got {len(row)} fields")
      name, label = (v.strip() for v in row)
      if number == 1 and (name.lower(), label.lower()) == ("file", "label"):
        continue
      name = os.path.normpath(name).replace(os.sep, "/")
      if name in labels and labels[name] != label:
        raise UEError(f"--labels {path}: {name} has two labels "
                      f"({labels[name]!r}, {label!r})")
      labels[name] = label
  return labels


def class_order(names) -> Tuple[str, ...]:
  """Class names sorted as integers when all are, else as text."""
  names = set(names)
  if all(n.lstrip("-").isdigit() for n in names):
    return tuple(sorted(names, key=int))
  return tuple(sorted(names))


def scan(root: str, *, labels_csv: str = "", what: str = "--input",
         classes: Optional[Tuple[str, ...]] = None,
         one_class: bool = False) -> Listing:
  """The labelled image files of `root`. `classes` fixes the class names
  and their order (a held-out folder must use the training folder's).
  `one_class` (a reference set gives the other classes) accepts a single
  class, and a folder of loose images as one class named after it."""
  if not os.path.isdir(root):
    raise UEError(f"{what} {root} is not a directory" if os.path.exists(root)
                  else f"{what} {root} does not exist")
  files = _walk(root)
  images = [f for f in files if is_image_name(f)]
  ignored = tuple(f for f in files if not is_image_name(f))
  if not images:
    raise UEError(f"{what} {root} holds no image files (extensions "
                  f"{', '.join(EXTENSIONS)})")
  options = (f"put each class's images in a subfolder named after the class "
             f"({root}/cat/1.png, {root}/dog/2.jpg) or pass --labels=FILE.csv "
             "with rows `file,label`")
  if labels_csv:
    table = read_csv_labels(labels_csv)
    missing = [f for f in images if f not in table]
    if missing:
      raise UEError(f"{len(missing)} image(s) of {what} {root} have no row in "
                    f"--labels {labels_csv}, e.g. {missing[0]}")
    absent = sorted(set(table) - set(images))
    if absent:
      raise UEError(f"--labels {labels_csv} names {len(absent)} file(s) not "
                    f"found in {root}, e.g. {absent[0]}")
    names = [table[f] for f in images]
  else:
    loose = [f for f in images if "/" not in f]
    if one_class and len(loose) == len(images):  # the folder is the class
      names = [os.path.basename(os.path.abspath(root))] * len(images)
    else:
      if len(loose) == len(images):
        raise UEError(f"{what} {root} is not labelled: {options}")
      if loose:
        raise UEError(f"{len(loose)} image(s) lie directly in {what} {root}, "
                      f"outside any class folder (e.g. {loose[0]}); "
                      f"{options}")
      names = [f.split("/", 1)[0] for f in images]
  order = classes or class_order(names)
  unknown = sorted(set(names) - set(order))
  if unknown:
    raise UEError(f"{what} {root} has class {unknown[0]!r}, which the "
                  f"training folder lacks (its classes: {', '.join(order)})")
  if classes is None and len(order) < 2 and not one_class:
    raise UEError(f"{what} {root} has a single class ({order[0]!r}); the "
                  "noise search needs images of other classes too: pass "
                  "--reference=FOLDER_OR_TAR (other classes' images, e.g. a "
                  "public dataset's class folders)")
  index = {name: i for i, name in enumerate(order)}
  entries = tuple(Entry(f, output_name(f), index[n])
                  for f, n in zip(images, names))
  seen = {}
  for e in entries:
    key = e.output.lower()  # also distinct on a case-insensitive disk
    if key in seen:
      raise UEError(f"{seen[key]} and {e.path} would both be written as "
                    f"{e.output}; rename one of them")
    seen[key] = e.path
  return Listing(root, entries, tuple(order), ignored)


def decode(raw: bytes, *, name: str = "") -> Tuple[Image.Image, str]:
  """The upright image (EXIF orientation applied) in one of MODES, and the
  mode the file holds. Raises BadFile."""
  try:
    with Image.open(io.BytesIO(raw)) as opened:
      opened.load()
      file_mode = opened.mode
      image = ImageOps.exif_transpose(opened)
      image.load()
  except (OSError, SyntaxError, ValueError, EOFError,
          Image.DecompressionBombError) as e:
    # pillow names the in-memory file by its address: not worth showing.
    reason = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(e))
    raise BadFile(f"not a readable image ({type(e).__name__}: "
                  f"{' '.join(reason.split())[:120]})") from None
  mode = image.mode
  if mode == "P":
    mode = "RGBA" if "transparency" in image.info else "RGB"
  mode = CONVERTED.get(mode, mode)
  if mode not in MODES:
    raise BadFile(f"mode {image.mode} is not supported; convert {name or 'it'}"
                  " to 8-bit L, LA, RGB or RGBA")
  return (image if image.mode == mode else image.convert(mode)), file_mode


def read(path: str) -> Picture:
  """The picture of an image file (see `decode`). Raises BadFile."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise BadFile(f"cannot be opened ({e.strerror or type(e).__name__})"
                  ) from None
  return from_bytes(raw, name=path)


def from_bytes(raw: bytes, *, name: str = "") -> Picture:
  """The picture of an image file's bytes (see `decode`). Raises BadFile."""
  image, file_mode = decode(raw, name=name)
  pixels = np.asarray(image, np.uint8)
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  return Picture(pixels, image.mode, file_mode,
                 hashlib.sha256(raw).hexdigest(), image.info.get("icc_profile"))


def to_working(picture: Picture, *, size: int, channels: int) -> np.ndarray:
  """The picture's color channels squeezed to size x size (aspect ratio not
  kept: the noise covers the whole image), uint8 [size, size, channels]:
  gray repeated to 3 channels, color to 1 by pillow's luma."""
  mode = "RGB" if channels == 3 else "L"
  color = picture.color
  image = Image.fromarray(color[..., 0] if color.shape[-1] == 1 else color,
                          "L" if color.shape[-1] == 1 else "RGB")
  image = image.convert(mode).resize((size, size),
                                     Image.Resampling.BILINEAR)
  out = np.asarray(image, np.uint8)
  return out[..., None] if out.ndim == 2 else out


def to_native(noise: np.ndarray, *, width: int, height: int, channels: int,
              eps: float, method: str = "bilinear") -> np.ndarray:
  """A working-resolution noise [s, s, c] as a native one [height, width,
  channels] (`method`: bilinear or nearest), re-bounded to [-eps, eps]; a
  3-channel noise on a gray image is averaged, a 1-channel one repeated."""
  planes = [np.asarray(Image.fromarray(np.ascontiguousarray(
      noise[..., c], np.float32), "F").resize((width, height),
                                              _RESAMPLE[method]))
            for c in range(noise.shape[-1])]
  out = np.stack(planes, -1)
  if channels == 1 and out.shape[-1] == 3:
    out = out.mean(-1, keepdims=True)
  elif channels == 3 and out.shape[-1] == 1:
    out = np.repeat(out, 3, -1)
  return np.clip(out, -eps, eps).astype(np.float32)


def compose(color: np.ndarray, alpha: Optional[np.ndarray]) -> np.ndarray:
  return color if alpha is None else np.concatenate([color, alpha], -1)


def to_image(pixels: np.ndarray, mode: str) -> Image.Image:
  return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                         mode)


def remove_temporaries(root: str) -> int:
  """Deletes the temporary files a killed run left below `root`."""
  count = 0
  for folder, _, files in os.walk(root):
    for name in files:
      if name.startswith(TEMP_PREFIX):
        os.remove(os.path.join(folder, name))
        count += 1
  return count


def write_png(path: str, image: Image.Image, *, icc: Optional[bytes] = None
              ) -> None:
  """Writes `image` as PNG at `path` atomically: a temporary file in the
  same folder, fsynced, then renamed (and the folder fsynced)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".png")
  try:
    with os.fdopen(fd, "wb") as f:
      image.save(f, format="PNG", **({"icc_profile": icc} if icc else {}))
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private (0600)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  try:
    dir_fd = os.open(folder, os.O_RDONLY)
  except OSError:  # a platform without directory handles
    return
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def check_copy(path: str, original: Picture, *, max_delta: int
               ) -> Tuple[str, int]:
  """Re-reads a written copy and checks it against its original: the same
  size and mode, alpha equal, every color value within `max_delta` (uint8
  units). Returns (sha256 of the file, max |delta|); raises BadFile."""
  copy = read(path)
  if copy.size != original.size or copy.mode != original.mode:
    raise BadFile(f"the copy is {copy.mode} {copy.size}, the original "
                  f"{original.mode} {original.size}")
  delta = np.abs(copy.color.astype(np.int16) - original.color.astype(
      np.int16))
  worst = int(delta.max(initial=0))
  if worst > max_delta:
    raise BadFile(f"the copy differs by {worst} > {max_delta} in a pixel")
  if original.alpha is not None and not np.array_equal(copy.alpha,
                                                       original.alpha):
    raise BadFile("the copy's alpha channel differs from the original's")
  return copy.sha256, worst
