"""Exports real images to an image folder (one subfolder per class) at mixed
sizes, the input of `python -m ue_jax.protect`.

  python tools/export_folder.py --out=runs/fm_folder/train --n=2000 \
      --split=train
  python tools/export_folder.py --out=runs/fm_folder/heldout --n=1000 \
      --split=test
  python tools/export_folder.py --dataset=cifar10 --path=CIFAR10_TAR \
      --out=runs/c10_folder/train --n=1000 --split=train

A seeded class-stratified subset of the split (io/data.py): Fashion-MNIST
from Debian's package, or CIFAR-10 from an image-folder tree or tar
(`--path`, as data.path). Image i is written at size SIZES[i % 4], resized
bicubically: for Fashion-MNIST 28x28 (as stored), 56x56, 42x30, 20x20; for
CIFAR-10 photo sizes 64x64, 96x72, 128x128 and 160x120 (width x height), as
PNG, except every 20th as JPEG (quality 95); `--modes=mixed` also turns
every 5th gray image into RGB and every 7th image into RGBA with a
horizontal alpha ramp.
"""

import argparse
import os

import numpy as np
from PIL import Image

from ue_jax.io import data as data_lib

SIZES = {"fashion_mnist": ((28, 28), (56, 56), (42, 30), (20, 20)),
         "cifar10": ((64, 64), (96, 72), (128, 128), (160, 120))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--dataset", choices=tuple(SIZES), default="fashion_mnist")
  parser.add_argument("--path", default="",
                      help="CIFAR-10 image-folder tree or tar (data.path)")
  parser.add_argument("--n", type=int, default=2000)
  parser.add_argument("--split", choices=("train", "test"), default="train")
  parser.add_argument("--modes", choices=("gray", "mixed"), default="gray")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.dataset == "fashion_mnist":
    train, test = data_lib.load("fashion_mnist", source="idx")
  else:
    train, test = data_lib.load("cifar10", source="folder", path=args.path)
  sizes = SIZES[args.dataset]
  ds = data_lib.stratified_subset(train if args.split == "train" else test,
                                  args.n, args.seed)
  for i in range(len(ds)):
    pixels = ds.images[i]
    image = (Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1
             else Image.fromarray(pixels, "RGB"))
    if sizes[i % 4] != image.size:
      image = image.resize(sizes[i % 4], Image.Resampling.BICUBIC)
    if args.modes == "mixed" and i % 7 == 3:
      pixels = np.asarray(image.convert("RGBA")).copy()
      ramp = np.linspace(80, 255, image.size[0]).astype(np.uint8)
      pixels[..., 3] = ramp[None, :]
      image = Image.fromarray(pixels, "RGBA")
    elif args.modes == "mixed" and i % 5 == 2 and image.mode == "L":
      image = image.convert("RGB")
    label = int(ds.labels[i])
    folder = os.path.join(args.out, ds.class_names[label] if ds.class_names
                          else str(label))
    os.makedirs(folder, exist_ok=True)
    name = f"{int(ds.source_index[i]):05d}"
    if i % 20 == 19 and image.mode != "RGBA":
      image.save(os.path.join(folder, name + ".jpg"), quality=95)
    else:
      image.save(os.path.join(folder, name + ".png"))
  print(f"{len(ds)} images in {args.out}")


if __name__ == "__main__":
  main()
