"""The protected copies of a folder, written file by file (the folder
tool's last phase, protect_folder.py): each file's working-resolution noise
row upsampled to its size, re-bounded to eps, added and rounded
(core/noise.release_images); the copy written as PNG atomically, re-read and
checked; each checked copy recorded as one JSON line, so a rerun skips it
after checking it again, and a torn last line of a killed run is ignored.
"""

import json
import os
from typing import Tuple

import numpy as np
from absl import logging

from ue_jax.core import noise as noise_lib
from ue_jax.io import artifacts
from ue_jax.io import image_folder as folder_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.runtime import interrupt
from ue_jax.runtime.errors import Interrupted
from ue_jax.runtime.errors import UEError


def _records(path: str) -> dict:
  """The checked copies a run recorded, by input path (a torn last line of
  a killed run is skipped)."""
  found = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue
        found[record["input"]] = record
  return found


def _append(path: str, record: dict):
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())


def protect_file(picture: folder_lib.Picture, noise: np.ndarray, *,
                 eps: float, method: str) -> np.ndarray:
  """The protected pixels of one picture (alpha unchanged) for its
  working-resolution noise row [s, s, c]."""
  width, height = picture.size
  delta = folder_lib.to_native(noise, width=width, height=height,
                               channels=picture.color.shape[-1], eps=eps,
                               method=method)
  color = noise_lib.release_images(picture.color, delta, eps=eps)
  return folder_lib.compose(color, picture.alpha)


def psnr_db(original: np.ndarray, copy: np.ndarray) -> float:
  """Peak signal-to-noise ratio of a uint8 copy against its original, in
  dB, at most 100 (an unchanged picture)."""
  mse = np.mean((copy.astype(np.float64) - original.astype(np.float64)) ** 2)
  return min(100.0, float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10))))


def write_all(cfg, listing, kept, facts, noise, output: str,
              log_path: str) -> Tuple[list, int, int, list]:
  """Writes (or, recorded and checked, skips) every kept file's copy,
  recording each in `log_path`; returns (records in order, written,
  skipped, changed [(path, reason)])."""
  eps = cfg.noise.eps
  m = noise_lib.max_delta_u8(eps)
  done = _records(log_path)
  removed = folder_lib.remove_temporaries(output)
  if removed:
    logging.info("removed %d temporary files of an interrupted run", removed)
  records, written, skipped, changed = [], 0, 0, []
  progress = metrics_lib.Progress("protect: write", len(kept), "img")
  with interrupt.StopSignals() as signals:
    for i, (entry, fact) in enumerate(zip(kept, facts)):
      dst = os.path.join(output, entry.output)
      try:
        picture = folder_lib.read(os.path.join(listing.root, entry.path))
      except folder_lib.BadFile as e:
        changed.append((entry.path, f"unreadable since the search: {e}"))
        continue
      if picture.sha256 != fact["sha256"]:
        changed.append((entry.path, "changed since the search; rerun with "
                        "--overwrite"))
        continue
      record = done.get(entry.path)
      if (record and record["input_sha256"] == fact["sha256"]
          and os.path.exists(dst)
          and artifacts.file_sha256(dst) == record["output_sha256"]):
        try:
          folder_lib.check_copy(dst, picture, max_delta=m)
          skipped += 1
        except folder_lib.BadFile:
          record = None
      else:
        record = None
      if record is None:
        row = noise_lib.noise_row(cfg.noise.layout, i, entry.label)
        pixels = protect_file(picture, noise[row], eps=eps,
                              method=cfg.protect.upsample)
        folder_lib.write_png(dst, folder_lib.to_image(pixels, picture.mode),
                             icc=picture.icc)
        try:
          sha, worst = folder_lib.check_copy(dst, picture, max_delta=m)
        except folder_lib.BadFile as e:
          raise UEError(f"{dst}: {e}; this is a bug") from None
        record = {"input": entry.path, "output": entry.output,
                  "psnr_db": round(psnr_db(picture.color, pixels[
                      ..., :picture.color.shape[-1]]), 2),
                  "input_sha256": fact["sha256"], "output_sha256": sha,
                  "size": fact["size"], "mode": picture.mode,
                  "input_mode": fact["file_mode"],
                  "label": listing.classes[entry.label],
                  "max_abs_delta": worst}
        _append(log_path, record)
        written += 1
      records.append(record)
      progress.update(1)
      if signals.signum is not None:
        raise Interrupted(
            f"{signals.name} received after {i + 1} of {len(kept)} files; "
            "rerun the same command to continue", signum=signals.signum)
  return records, written, skipped, changed
