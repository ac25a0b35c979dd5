"""How closely ue_jax.core.jpeg.jpeg matches pillow's JPEG on real images.

  python tools/jpeg_match.py --cifar10=/path/cifar10-jpeg.tar.gz
  UE_JAX_CIFAR10=/path/cifar10-jpeg.tar.gz python tools/jpeg_match.py \
      --n=1000 --qualities=10,50,75

Takes --n training images of the CIFAR-10 image-folder tar (the first
n / classes of each class folder, in name order), encodes each as pillow
does by default (`Image.save(buf, "JPEG", quality=q)`), decodes it, and
compares with jpeg(x, q) on the same uint8 pixels. Prints, per quality, the
mean and largest absolute difference in uint8 levels, the share of values
that differ, and pillow's own mean change of the image (how lossy q is).
"""

import io
import os
import posixpath
import tarfile
import time

import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from PIL import Image

from ue_jax.core import jpeg as jpeg_lib

_CIFAR10 = flags.DEFINE_string(
    "cifar10", os.environ.get("UE_JAX_CIFAR10"),
    "CIFAR-10 image-folder tar (default: $UE_JAX_CIFAR10)")
_N = flags.DEFINE_integer("n", 1000, "Training images to compare.",
                          lower_bound=1)
_QUALITIES = flags.DEFINE_list("qualities", ["10", "50", "75"],
                               "JPEG qualities.")
_SPLIT = flags.DEFINE_string("split", "train", "The tar's split folder.")


def pillow_round_trip(images_u8: np.ndarray, quality: int) -> np.ndarray:
  """Each uint8 RGB image [N, H, W, 3] saved by pillow as a JPEG at
  `quality` (its defaults otherwise) and decoded again."""
  out = np.empty_like(images_u8)
  for i, image in enumerate(images_u8):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
  return out


def cifar10_images(path: str, n: int, *, split: str = "train") -> np.ndarray:
  """The first ceil(n / classes) images of each class folder of `split` in
  the image-folder tar at `path` (names in order), n of them in class
  order: uint8 [n, H, W, 3]."""
  blobs = {}
  with tarfile.open(path) as tar:
    for member in tar:
      parts = member.name.split("/")
      if (not member.isfile() or len(parts) < 3 or split not in parts[:-2]
          or not member.name.lower().endswith((".jpg", ".jpeg", ".png"))):
        continue
      blobs.setdefault(parts[-2], {})[member.name] = (
          tar.extractfile(member).read())
  if not blobs:
    raise ValueError(f"no {split}/<class>/ images in {path}")
  per_class = -(-n // len(blobs))
  images = []
  for cls in sorted(blobs):
    for name in sorted(blobs[cls])[:per_class]:
      image = Image.open(io.BytesIO(blobs[cls][name])).convert("RGB")
      images.append(np.asarray(image))
  if len(images) < n:
    raise ValueError(f"{path} holds {len(images)} usable images, asked {n}")
  return np.stack(images[:n])


def measure(images_u8: np.ndarray, quality: int, *, batch: int = 500):
  """Differences (uint8 levels) between jpeg(x, quality) and pillow's
  round trip of images_u8: a dict of mean, max, the share of differing
  values and pillow's mean change of the images."""
  ref = pillow_round_trip(images_u8, quality).astype(np.int32)
  ours = []
  for start in range(0, len(images_u8), batch):
    x = jnp.asarray(images_u8[start:start + batch], jnp.float32) / 255.0
    ours.append(np.asarray(jpeg_lib.jpeg(x, quality)))
  ours = np.round(np.concatenate(ours) * 255.0).astype(np.int32)
  diff = np.abs(ours - ref)
  return dict(quality=quality, images=len(images_u8),
              mean_abs=float(diff.mean()), max_abs=int(diff.max()),
              differing=float((diff > 0).mean()),
              pillow_change=float(np.abs(ref - images_u8).mean()))


def main(argv):
  del argv
  if not _CIFAR10.value:
    raise app.UsageError("give --cifar10 or set UE_JAX_CIFAR10")
  start = time.time()
  images = cifar10_images(_CIFAR10.value, _N.value, split=_SPLIT.value)
  print(f"{len(images)} {_SPLIT.value} images "
        f"{images.shape[1]}x{images.shape[2]} from "
        f"{posixpath.basename(_CIFAR10.value)} ({time.time() - start:.1f} s)")
  print("quality  mean |diff|  max |diff|  differing  pillow's mean change")
  for quality in (int(q) for q in _QUALITIES.value):
    r = measure(images, quality)
    print(f"{quality:7d}  {r['mean_abs']:11.4f}  {r['max_abs']:10d}  "
          f"{r['differing']:9.2%}  {r['pillow_change']:20.3f}")
  print("(uint8 levels; jpeg = ue_jax.core.jpeg.jpeg, rounding='ste')")


if __name__ == "__main__":
  app.run(main)
