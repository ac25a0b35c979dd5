"""Protects a folder of image files: the min-min search at a working
resolution, the noise applied to every file at its own resolution.

Phases (docs/protect.md):
1. checks, before anything is written: the config, the paths (the output
   must be neither the input nor inside it nor around it), the workdir's
   config record, the folder's labels;
2. reading: every file once, decoded upright, hashed, squeezed to the
   working size (io/image_folder.py); an unreadable file is set aside and
   named at the end, the others are protected;
3. the search (search/generate.py) on the working copies, an in-memory
   Dataset in a seeded shuffled order (its model steps walk the rows in
   order); checkpointed in the workdir and resumed by a rerun;
4. writing, file by file: the file's noise row upsampled to its size,
   re-bounded to eps, added and rounded (core/noise.release_images), the
   copy written as PNG atomically and re-read and checked; each checked copy
   is recorded (DIR/written.jsonl), so a rerun skips it after checking it
   again;
5. DIR/manifest.json (every file's hashes, size, mode, label, max |delta|)
   and DIR/preview.png.

Memory: the working copies and the working-resolution noise of the whole
folder, plus one file at its own size at a time.
"""

import os
import time
from typing import List, Optional, Tuple

import numpy as np
from absl import logging

from ue_jax.evaluation import folders
from ue_jax.io import artifacts
from ue_jax.io import copies as copies_lib
from ue_jax.io import data as data_lib
from ue_jax.io import image_folder as folder_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.io import reference as reference_lib
from ue_jax.io import workdir as workdir_lib
from ue_jax.core import noise as noise_lib
from ue_jax.config import checks
from ue_jax.runtime.errors import UEError
from ue_jax.search import generate
from ue_jax.training import layouts

WORKDIR_NAME = ".ue_jax"  # the default workdir, inside --output
FOLDER, WRITTEN = "folder.json", "written.jsonl"
MANIFEST, PREVIEW = "manifest.json", "preview.png"
OWN_FILES = (FOLDER, WRITTEN, MANIFEST, PREVIEW, "curves.png")


def default_workdir(output: str) -> str:
  return os.path.join(output, WORKDIR_NAME)


def _real(path: str) -> str:
  return os.path.realpath(os.path.abspath(path))


def check_paths(input_dir: str, output_dir: str, workdir: str, *,
                labels: str = "", heldout: str = "",
                reference: str = "") -> None:
  """Refuses paths that would lose or mix data; reads, never writes."""
  src, out, work = _real(input_dir), _real(output_dir), _real(workdir)
  if not os.path.exists(src):
    checks.fail(f"--input {input_dir} does not exist")
  if not os.path.isdir(src):
    checks.fail(f"--input {input_dir} is not a directory")
  if out == src:
    checks.fail(f"--output {output_dir} is the input folder; choose a new "
                "folder (the input is never modified)")
  if workdir_lib.inside(out, src):
    checks.fail(f"--output {output_dir} lies inside --input {input_dir}; "
                "choose a folder outside it")
  if workdir_lib.inside(src, out):
    checks.fail(f"--output {output_dir} contains --input {input_dir}; "
                "choose a folder beside it")
  if os.path.exists(out) and not os.path.isdir(out):
    checks.fail(f"--output {output_dir} exists and is not a directory")
  if workdir_lib.inside(work, src) or workdir_lib.inside(src, work):
    checks.fail(f"--workdir {workdir} overlaps --input {input_dir}; choose "
                "a folder outside it")
  ours = os.path.exists(os.path.join(work, workdir_lib.CONFIG_FILE))
  if os.path.isdir(out) and not ours and any(
      not name.startswith(".") for name in os.listdir(out)):
    checks.fail(f"--output {output_dir} is not empty and was not written by "
                "ue_jax.protect (no record in its workdir); choose a new or "
                "empty folder")
  if labels and not os.path.isfile(labels):
    checks.fail(f"--labels {labels} is not a file")
  if heldout:
    held = _real(heldout)
    if not os.path.isdir(held):
      checks.fail(f"--heldout {heldout} is not a directory")
    if workdir_lib.inside(held, src) or workdir_lib.inside(src, held):
      checks.fail(f"--heldout {heldout} overlaps --input {input_dir}; the "
                  "held-out images must be others")
  if reference:
    ref = _real(reference)
    if not os.path.exists(ref):
      checks.fail(f"--reference {reference} does not exist")
    for flag, path in (("--input", src), ("--output", out)):
      if workdir_lib.inside(ref, path) or workdir_lib.inside(path, ref):
        checks.fail(f"--reference {reference} overlaps {flag} "
                    f"{input_dir if flag == '--input' else output_dir}; the "
                    "reference must be other images, outside both")


def read_working(listing: folder_lib.Listing, *, size: int, channels: int,
                 label: str) -> Tuple[np.ndarray, list, list, list]:
  """Reads every file of `listing` once: (working images uint8
  [n, size, size, C], kept entries, their pictures' facts, failed
  [(path, reason)]). `channels` 0 picks 1 for an all-gray folder, else 3."""
  kept, facts, failed, arrays = [], [], [], []
  progress = metrics_lib.Progress(label, len(listing.entries), "img")
  for entry in listing.entries:
    try:
      picture = folder_lib.read(os.path.join(listing.root, entry.path))
    except folder_lib.BadFile as e:
      failed.append((entry.path, str(e)))
      logging.warning("%s: %s", entry.path, e)
    else:
      own = channels or picture.color.shape[-1]
      arrays.append(folder_lib.to_working(picture, size=size, channels=own))
      kept.append(entry)
      facts.append({"sha256": picture.sha256, "size": list(picture.size),
                    "mode": picture.mode, "file_mode": picture.file_mode})
    progress.update(1)
  c = channels or max((a.shape[-1] for a in arrays), default=1)
  images = np.zeros((len(arrays), size, size, c), np.uint8)
  for i, a in enumerate(arrays):
    images[i] = a if a.shape[-1] == c else np.repeat(a, c, -1)
  return images, kept, facts, failed


def _fingerprint(listing, kept, facts, failed) -> dict:
  """The files (in the search's row order), their hashes and labels."""
  return {"classes": list(listing.classes),
          "files": [[e.path, f["sha256"], e.label] for e, f in zip(kept,
                                                                   facts)],
          "failed": [p for p, _ in failed]}


def _check_fingerprint(path: str, fingerprint: dict):
  old = artifacts.load_json(path)
  if old is not None and old != fingerprint:
    raise UEError(f"the input folder differs from the one whose noise is in "
                  f"{os.path.dirname(path)} (files, contents or labels); "
                  "pass --overwrite to search afresh, or restore the folder")


def _fitted(cfg, n: int):
  """The config with batch sizes at most the folder's n images."""
  cfg = cfg.copy_and_resolve_references()
  for block, field in (("generate", "batch_size"),
                       ("generate", "eval_batch_size"),
                       ("evaluate", "batch_size"),
                       ("evaluate", "eval_batch_size")):
    if cfg[block][field] > n:
      logging.info("%s.%s=%d exceeds the %d images; using %d", block, field,
                   cfg[block][field], n, n)
      cfg[block][field] = n
  return cfg


def with_fit_classes(cfg, listing, reference: str):
  """The config the search runs: with a reference set, the noise is searched
  for the input's classes only (noise.fit_classes; the reference's rows
  follow the input's and keep zero noise)."""
  if not reference:
    return cfg
  if cfg.noise.kind not in ("error_min", "error_max"):
    checks.fail(f"--reference searches the noise of the input's images only: "
                "it needs error_min or error_max noise (got noise.kind="
                f"{cfg.noise.kind!r})")
  if not noise_lib.samplewise(cfg.noise.layout) and len(listing.classes) == 1:
    logging.warning(
        "class-wise noise for one class beside a reference: measured on "
        "CIFAR-10 cats, a learner with crop + flip recognized the protected "
        "class as well as the clean one (docs/protect.md, \"The robust variant "
        "for one class\"); the default sample-wise search protected it")
  cfg = cfg.copy_and_resolve_references()
  cfg.noise.fit_classes = tuple(range(len(listing.classes)))
  return cfg


def run(cfg, input_dir: str, output_dir: str, *, workdir: str = "",
        labels: str = "", heldout: str = "", overwrite: bool = False,
        reference: str = "", reference_size: int = 5000) -> dict:
  """Protects `input_dir` into `output_dir`; returns the summary (also
  DIR/results.json) with `failed`: the files that could not be protected.
  With `reference` (a class tree, tar or dataset root of other classes,
  io/reference.py: at most `reference_size` images), the input may be a
  single class; the search trains on both, only the input is written."""
  checks.check_protect_config(cfg)
  cfg = checks.snapped(cfg)  # an eps a hair off k/255 is taken as k/255
  workdir = workdir or default_workdir(output_dir)
  check_paths(input_dir, output_dir, workdir, labels=labels, heldout=heldout,
              reference=reference)
  listing = folder_lib.scan(input_dir, labels_csv=labels,
                            one_class=bool(reference))
  cfg = with_fit_classes(cfg, listing, reference)
  workdir_lib.verify(cfg, workdir, overwrite=overwrite)
  p = cfg.protect
  test_listing = (folder_lib.scan(heldout, what="--heldout",
                                  classes=listing.classes)
                  if heldout else None)
  images, kept, facts, failed = read_working(
      listing, size=p.size, channels=p.channels, label="protect: read")
  # Rows in a seeded shuffled order: the model steps walk them in the
  # config's generate.model_order (shuffled by default; a stored walk of a
  # folder sorted by class would give single-class batches).
  order = np.random.default_rng([cfg.seed, 5]).permutation(len(kept))
  images, kept, facts = (images[order], [kept[i] for i in order],
                         [facts[i] for i in order])
  ref = None
  if reference:
    ref = reference_lib.load(reference, size=p.size,
                             channels=images.shape[-1],
                             exclude=listing.classes, limit=reference_size,
                             seed=cfg.seed)
  if len({e.label for e in kept}) < (1 if ref else 2):
    raise UEError(f"--input {input_dir}: {len(kept)} readable image(s) in "
                  f"fewer than 2 classes ({len(failed)} unreadable, e.g. "
                  f"{failed[0][0] if failed else '-'}); the search needs 2")
  fingerprint = _fingerprint(listing, kept, facts, failed)
  if ref is not None:
    fingerprint["reference"] = {"path": os.path.abspath(reference),
                                "images": len(ref.labels),
                                "classes": list(ref.classes),
                                "digest": ref.digest}
  if not overwrite:
    _check_fingerprint(os.path.join(workdir, FOLDER), fingerprint)
  test = None
  if test_listing is not None:
    test_images, test_kept, _, test_failed = read_working(
        test_listing, size=p.size, channels=images.shape[-1],
        label="protect: read held-out")
    if test_failed:
      raise UEError(f"--heldout {heldout}: {test_failed[0][0]} "
                    f"{test_failed[0][1]}")
    test = data_lib.make_dataset(
        test_images, [e.label for e in test_kept],
        len(listing.classes) + (len(ref.classes) if ref else 0), "heldout")
  # Nothing was written up to here; from here on the workdir is ours.
  if overwrite:
    for name in OWN_FILES:
      if os.path.exists(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))
  workdir_lib.claim(cfg, workdir, overwrite=overwrite)
  artifacts.save_json(os.path.join(workdir, FOLDER), fingerprint)
  train = data_lib.make_dataset(images, [e.label for e in kept],
                                len(listing.classes), "folder")
  if ref is not None:  # the search's set: the input's rows, then these
    train = reference_lib.joined(images, train.labels, listing.classes, ref)
  run_cfg = _fitted(cfg, len(train))
  jpegs = [e.path for e in kept if os.path.splitext(e.path)[1].lower()
           in folder_lib.JPEG_EXTENSIONS]
  if jpegs:
    logging.warning("%d JPEG input(s) (e.g. %s) are written as PNG: "
                    "re-encoding a protected copy as JPEG weakens the "
                    "protection", len(jpegs), jpegs[0])
  log = metrics_lib.MetricLog(workdir)
  # DIR/results.json is rebuilt from this run's header and the parts in
  # DIR/results/: the search's (kept while its noise is), the copies'
  # (this run's) and the held-out check's (this run's, with --heldout).
  results = workdir_lib.Results(workdir, {
      "config_name": cfg.name, "input": os.path.abspath(input_dir),
      "output": os.path.abspath(output_dir), "images": len(kept),
      "classes": list(listing.classes),
      **({"reference": fingerprint["reference"]} if ref else {}),
      "working_shape": list(train.image_shape), "epsilon": cfg.noise.eps,
      "epsilon_255": round(cfg.noise.eps * 255, 4), "config": cfg.to_dict()})
  noise_path = os.path.join(workdir, "noise.npy")
  if not ("generate" in results.stages and os.path.exists(noise_path)):
    results.start("generate")
    results.record("generate", generate.run(run_cfg, train, workdir, log))
  noise = artifacts.load_noise(
      noise_path, shape=layouts.noise_shape(cfg.noise.layout, train),
      eps=cfg.noise.eps)
  t0 = time.perf_counter()
  records, written, skipped, changed = copies_lib.write_all(
      run_cfg, listing, kept, facts, noise, output_dir,
      os.path.join(workdir, WRITTEN))
  failed = failed + changed
  manifest = {"epsilon": cfg.noise.eps,
              "max_delta_u8": noise_lib.max_delta_u8(cfg.noise.eps),
              "working_shape": list(train.image_shape),
              "upsample": p.upsample, "classes": list(listing.classes),
              "files": sorted(records, key=lambda r: r["input"]),
              "failed": [{"input": f, "reason": r} for f, r in failed],
              "ignored": list(listing.ignored)}
  artifacts.save_json(os.path.join(workdir, MANIFEST), manifest)
  copies = {"written": written, "skipped_verified": skipped,
            "protected": len(records), "failed": manifest["failed"],
            "manifest_path": os.path.join(workdir, MANIFEST),
            "max_abs_delta": max((r["max_abs_delta"] for r in records),
                                 default=0),
            "write_seconds": time.perf_counter() - t0}
  psnrs = [r["psnr_db"] for r in records if "psnr_db" in r]
  if psnrs:
    copies["psnr_db_median"] = float(np.median(psnrs))
    copies["psnr_db_min"] = float(np.min(psnrs))
  # The figure is redrawn by every run (protect.preview is no part of the
  # search's identity); with no rows, an earlier run's figure goes.
  preview_path = os.path.join(workdir, PREVIEW)
  if p.preview and records:
    copies["preview_path"] = artifacts.save_figure(
        preview_path,
        folders.preview(listing, kept, records, noise, output_dir,
                        eps=cfg.noise.eps, layout=cfg.noise.layout,
                        method=p.upsample, rows=p.preview))
  elif artifacts.writes_files() and os.path.exists(preview_path):
    os.remove(preview_path)
  results.start("release")  # also drops an earlier held-out check's part
  union = results.record("release", copies)
  if test is not None:
    results.start("evaluate")
    union = results.record("evaluate", folders.compare(
        run_cfg, train, kept, records, test, output_dir, workdir, log))
  return union


# What to expect, printed at the end of a run and shown on the page; each
# figure is measured in docs/protect.md (commands there).
EXPECTATIONS = (
    "What to expect (docs/protect.md): a model trained on the copies learns "
    "little of what they show. One person's 200 cat photos protected beside "
    "4500 public images of other classes (16/255): it recognized 0.030 of "
    "held-out cat photos, against 0.280 when trained on the originals; 1000 "
    "colour photos in 10 classes: 0.248 against 0.428.",
    "What undoes it: re-encoding the copies as JPEG before training brings "
    "a learner back to its clean accuracy; converting them to grayscale did "
    "so where every class carried noise, not for one person's class "
    "(CIFAR-10, 8/255). Keep and share the PNG copies. Not measured: "
    "full-resolution learners and fine-tuning a pretrained model.",
)


def summary_lines(results: dict) -> List[str]:
  """The short account of a run: what was written, how visible the change
  is, the held-out check if any, and what to expect."""
  lines = [f"protected {results['protected']} image(s) at eps "
           f"{results['epsilon_255']:g}/255 (largest change "
           f"{results['max_abs_delta']} levels)"]
  if "psnr_db_median" in results:
    lines.append(f"visibility: PSNR median {results['psnr_db_median']:.1f} "
                 f"dB, lowest {results['psnr_db_min']:.1f} dB (about 30 dB "
                 "and above is hard to see; see preview.png in the workdir)")
  if "unlearnable_test_accuracy" in results:
    lines.append(f"held-out check: a model trained on the copies scores "
                 f"{results['unlearnable_test_accuracy']:.3f}, on the "
                 f"originals {results['clean_test_accuracy']:.3f}")
  return lines + list(EXPECTATIONS)


def failures_line(failed: List[dict], total: Optional[int] = None) -> str:
  """One line naming the files that could not be protected."""
  shown = "; ".join(f"{f['input']}: {f['reason']}" for f in failed[:5])
  more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
  done = f" (the other {total} are protected)" if total is not None else ""
  return f"{len(failed)} file(s) could not be protected{done}: {shown}{more}"
