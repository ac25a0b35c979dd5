"""How much of the searched noise a protected folder still carries at the
working resolution, per native image size.

The noise is searched on working copies (every image squeezed to SxS) and
applied to each file at its own size (upsampled, bounded, rounded). A
learner that reads the copies at SxS sees, instead of the searched noise
delta, the difference d = working(copy) - working(original). For every file
of a finished `python -m ue_jax.protect` run this prints, grouped by native
size: mean |delta| and mean |d| (in 1/255) and their correlation (1: the
searched noise arrives whole).

  python tools/protect_roundtrip.py --input=runs/fm_folder/train \
      --output=runs/fm_folder/protected
"""

import argparse
import collections
import json
import os

import numpy as np

from ue_jax.io import image_folder as folder_lib


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--input", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--workdir", default="")
  args = parser.parse_args()
  workdir = args.workdir or os.path.join(args.output, ".ue_jax")
  with open(os.path.join(workdir, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  with open(os.path.join(workdir, "folder.json"), encoding="utf-8") as f:
    rows = {p: i for i, (p, _, _) in enumerate(json.load(f)["files"])}
  noise = np.load(os.path.join(workdir, "noise.npy"), mmap_mode="r")
  size, channels = manifest["working_shape"][0], manifest["working_shape"][-1]
  groups = collections.defaultdict(lambda: [[], [], []])
  for record in manifest["files"]:
    original = folder_lib.read(os.path.join(args.input, record["input"]))
    copy = folder_lib.read(os.path.join(args.output, record["output"]))
    seen = (folder_lib.to_working(copy, size=size, channels=channels)
            .astype(np.float32) - folder_lib.to_working(
                original, size=size, channels=channels).astype(np.float32))
    searched = np.asarray(noise[rows[record["input"]]]) * 255.0
    key = "x".join(map(str, record["size"]))
    groups[key][0].append(np.abs(searched).mean())
    groups[key][1].append(np.abs(seen).mean())
    groups[key][2].append(np.corrcoef(searched.ravel(), seen.ravel())[0, 1])
  print("| native size | files | mean abs searched noise (1/255) | mean abs "
        "noise seen at working size (1/255) | correlation |")
  print("|---|---|---|---|---|")
  for key in sorted(groups, key=lambda k: -len(groups[k][0])):
    a, b, r = (np.asarray(v) for v in groups[key])
    print(f"| {key} | {len(a)} | {a.mean():.2f} | {b.mean():.2f} | "
          f"{np.nanmean(r):.3f} |")


if __name__ == "__main__":
  main()
