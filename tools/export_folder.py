"""Exports real Fashion-MNIST images to an image folder (one subfolder per
class) at mixed sizes, the input of `python -m ue_jax.protect`.

  python tools/export_folder.py --out=runs/fm_folder/train --n=2000 \
      --split=train
  python tools/export_folder.py --out=runs/fm_folder/heldout --n=1000 \
      --split=test

A seeded class-stratified subset of the split (io/data.py). Image i is
written at size SIZES[i % 4] (28x28 as stored, 56x56, 42x30, 20x20, resized
bicubically), as PNG, except every 20th as JPEG (quality 95); `--modes=mixed`
also turns every 5th image into RGB and every 7th into RGBA with a
horizontal alpha ramp.
"""

import argparse
import os

import numpy as np
from PIL import Image

from ue_jax.io import data as data_lib

SIZES = ((28, 28), (56, 56), (42, 30), (20, 20))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--n", type=int, default=2000)
  parser.add_argument("--split", choices=("train", "test"), default="train")
  parser.add_argument("--modes", choices=("gray", "mixed"), default="gray")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  train, test = data_lib.load("fashion_mnist", source="idx")
  ds = data_lib.stratified_subset(train if args.split == "train" else test,
                                  args.n, args.seed)
  for i in range(len(ds)):
    image = Image.fromarray(ds.images[i, ..., 0], "L")
    if SIZES[i % 4] != image.size:
      image = image.resize(SIZES[i % 4], Image.Resampling.BICUBIC)
    if args.modes == "mixed" and i % 7 == 3:
      pixels = np.asarray(image.convert("RGBA")).copy()
      ramp = np.linspace(80, 255, image.size[0]).astype(np.uint8)
      pixels[..., 3] = ramp[None, :]
      image = Image.fromarray(pixels, "RGBA")
    elif args.modes == "mixed" and i % 5 == 2:
      image = image.convert("RGB")
    folder = os.path.join(args.out, f"{ds.labels[i]}")
    os.makedirs(folder, exist_ok=True)
    name = f"{int(ds.source_index[i]):05d}"
    if i % 20 == 19 and image.mode != "RGBA":
      image.save(os.path.join(folder, name + ".jpg"), quality=95)
    else:
      image.save(os.path.join(folder, name + ".png"))
  print(f"{len(ds)} images in {args.out}")


if __name__ == "__main__":
  main()
