"""Which config a workdir belongs to: DIR/config.json, checked before reuse.

`verify` runs before anything is computed or written and refuses (UEError) a
workdir whose noise another config made unless --overwrite is given; `claim`
then removes the old outputs (with --overwrite) and records the config. The
hash is the sha256 of the config's canonical JSON (sorted keys, no spaces).
--overwrite acts only on a ue_jax workdir (its config.json is a record
`claim` wrote) or an empty one, and deletes only what ue_jax writes there
(`OUTPUTS`, and inside their folders the names of `OWNED`); any other
non-empty folder is refused, and another file inside an output folder is
kept with the folder that holds it. `Results` keeps DIR/results.json: each
stage's own file, DIR/results/<stage>.json, and their union.

Each stage's outputs depend on part of the config only (`identity`): the
noise on everything but the name, checkpoint.*, data.cache_dir,
generate.max_seconds (a capped search resumes under another cap),
protect.preview (the folder tool's figure), partial.*,
release.* and evaluate.* (the last unless the error-max pretraining uses
it); a record made before a field existed reads as that field's value of
then (`ADDED_FIELDS`); the release
also on partial.* and release.*; the evaluation also on evaluate.*. A field
outside the noise's part may change on a workdir, so a killed generation
resumes after checkpoint.* or evaluate.* were edited. The part a finished
release or evaluation was made with is recorded (`record_stage`), and a run
that would read such stale outputs, or leave them in place under the new
config, is refused; a run that redoes the stage is not.
"""

import hashlib
import json
import os
import re
import shutil
from typing import Any, Dict, Optional

from ue_jax.io import artifacts
from ue_jax.runtime.errors import UEError

CONFIG_FILE = "config.json"
# Everything a run writes into its workdir; --overwrite deletes these only.
RESULTS, STAGE_RESULTS = "results.json", "results"
OUTPUTS = (CONFIG_FILE, "checkpoints", "noise.npy", "release", "figure.png",
           "curves.png", RESULTS, STAGE_RESULTS, "metrics.jsonl", "battery",
           "tensorboard")
# The stages, in order, whose results.json part is DIR/results/<stage>.json.
RESULT_STAGES = ("generate", "release", "evaluate", "battery")
# What ue_jax writes inside the folders of OUTPUTS (by the folder's path in
# the workdir: full-match patterns of entry names; an entry that is itself a
# folder here is cleared the same way, else removed whole): --overwrite
# deletes these and keeps every other entry, and the folders that hold one.
OWNED = {"checkpoints": (r"\d+", r"\d+\.orbax-checkpoint-tmp.*"),  # Orbax
         "release": (r"unlearnable_train\.npz",),
         "battery": (r"battery\.(json|md|png)", "cells", "clean"),
         "battery/cells": (r"[0-9a-f]{16}\.json",),
         "battery/clean": (r"[0-9a-f]{16}\.json",),
         "tensorboard": (r"events\.out\.tfevents\..+",),
         STAGE_RESULTS: (rf"({'|'.join(RESULT_STAGES)})\.json",
                         r"before_stage_files\.json")}
# The temporary files of artifacts' atomic writes (a killed run's leftovers).
TEMPORARY = r"\.tmp-[0-9a-f]{16}(\.\w+)?"


# Config blocks that do not change what generate/release/evaluate write (the
# battery keys each of its cells by its own settings), so a workdir accepts
# any of their values and its record leaves them out.
MEASUREMENT_ONLY = ("battery",)
# Fields that change no output at all (blocks, or dotted fields).
# generate.max_seconds only stops the search early, at a checkpoint from
# which a rerun with a larger cap resumes; protect.preview is the number of
# rows of the folder tool's figure, redrawn by every run.
OPERATIONAL = ("name", "checkpoint", "data.cache_dir", "generate.max_seconds",
               "protect.preview")
# Fields added to the config after workdirs were first recorded, with the
# value that reproduces what a record without them was made with: such a
# record reads as if it had that value, so it still resumes.
ADDED_FIELDS = {"model.compute_dtype": "float32",
                "generate.model_order": "stored",
                "noise.lsp_l2_eps": 0.0,
                "noise.form": "rgb", "noise.form_block": 4,
                "noise.at_bound": False,
                "noise.target_shift": 0, "noise.sep_members": 30,
                "noise.fit_classes": []}
# The stages after generation whose outputs stay in the workdir, the files
# that show they ran, and the blocks each adds to the identity before it.
STAGE_OUTPUTS = {"release": (os.path.join("release", "unlearnable_train.npz"),),
                 "evaluate": ("curves.png",)}
STAGE_BLOCKS = {"generate": (), "release": ("partial", "release"),
                "evaluate": ("evaluate",)}
# Which stage's outputs a stage reads from the workdir (the release: the
# noise, unless release.noise_path names another).
READS = {"release": "generate", "evaluate": "release", "battery": "release"}



def inside(path: str, folder: str) -> bool:
  """Whether `path` is `folder` or lies below it (as absolute paths; the
  callers resolve links where it matters)."""
  path, folder = os.path.abspath(path), os.path.abspath(folder)
  return os.path.commonpath([path, folder]) == folder

def canonical(cfg) -> Dict[str, Any]:
  """The config as plain JSON data (tuples become lists, as on disk),
  without the measurement-only blocks."""
  config = {k: v for k, v in cfg.to_dict().items()
            if k not in MEASUREMENT_ONLY}
  return json.loads(json.dumps(config, sort_keys=True))


def _with_added(config: Dict[str, Any]) -> Dict[str, Any]:
  """`config` with the ADDED_FIELDS its blocks lack, at their old values."""
  kept = dict(config)
  for dotted, value in ADDED_FIELDS.items():
    block, field = dotted.split(".", 1)
    if isinstance(kept.get(block), dict) and field not in kept[block]:
      kept[block] = {**kept[block], field: value}
  return kept


def identity(config: Dict[str, Any], stage: str) -> Dict[str, Any]:
  """The part of a canonical config that `stage`'s outputs depend on
  (module docstring); blocks a config lacks are left out."""
  order = tuple(STAGE_BLOCKS)
  later = {b for s in order[order.index(stage) + 1:] for b in STAGE_BLOCKS[s]}
  if (config.get("generate") or {}).get("pretrain_epochs"):
    later.discard("evaluate")  # the error-max pretraining's recipe
  kept = _with_added({k: v for k, v in config.items()
                      if k not in OPERATIONAL and k not in later})
  for dotted in (f for f in OPERATIONAL if "." in f):
    block, field = dotted.split(".", 1)
    if isinstance(kept.get(block), dict) and field in kept[block]:
      kept[block] = {k: v for k, v in kept[block].items() if k != field}
  return kept


def config_hash(config: Dict[str, Any]) -> str:
  text = json.dumps(config, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def first_difference(old, new, prefix: str = "") -> Optional[str]:
  """The first dotted field (in sorted order) where two configs differ,
  described as `field: old -> new`; None when they are equal."""
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      name = f"{prefix}{key}"
      if key not in old or key not in new:
        side = "this config" if key not in old else "the workdir's config"
        return f"{name} (only in {side})"
      found = first_difference(old[key], new[key], name + ".")
      if found:
        return found
    return None
  if old != new or type(old) is not type(new):
    return f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"
  return None


def _outputs(workdir: str):
  return [name for name in OUTPUTS
          if os.path.lexists(os.path.join(workdir, name))]


def _made_with(record, workdir: str) -> Dict[str, Dict[str, Any]]:
  """{stage: identity it ran with} for the later stages whose outputs are
  in the workdir; a record older than the stage entries stands for all."""
  made = {}
  for stage, files in STAGE_OUTPUTS.items():
    if all(os.path.exists(os.path.join(workdir, f)) for f in files):
      stored = (record.get("stages") or {}).get(stage)
      made[stage] = (_with_added(stored) if stored else
                     identity(record["config"], stage))
  return made


def is_record(record) -> bool:
  """Whether a loaded config.json is a record `claim` wrote."""
  return (isinstance(record, dict) and isinstance(record.get("config"), dict)
          and isinstance(record.get("sha256"), str))


def _check_overwritable(workdir: str):
  """Refuses --overwrite on a non-empty folder that is not a ue_jax
  workdir: it would delete files that ue_jax never wrote."""
  if not os.path.isdir(workdir) or not os.listdir(workdir):
    return
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.isfile(path) and is_record(artifacts.load_json(path)):
    return
  names = sorted(os.listdir(workdir))
  shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more"
                                  if len(names) > 5 else "")
  raise UEError(f"--workdir {workdir} is not a ue_jax workdir (it holds "
                f"{shown} but no ue_jax record {CONFIG_FILE}); --overwrite "
                "deletes outputs only in a ue_jax workdir, so nothing was "
                "deleted; give a new or empty --workdir")


def verify(cfg, workdir: str, *, overwrite: bool, stages=None):
  """Refuses a workdir whose noise another config made, and (given the
  `stages` this run runs) one whose release or evaluation another config
  made where this run would read them or leave them in place; with
  `overwrite`, a non-empty folder that is not a ue_jax workdir. Reads,
  never writes."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UEError(f"--workdir {workdir} exists and is not a directory")
  if overwrite:
    _check_overwritable(workdir)
    return
  if not os.path.isdir(workdir):
    return
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    found = _outputs(workdir)
    if found:
      raise UEError(f"workdir {workdir} holds {', '.join(found)} but no "
                    f"{CONFIG_FILE}, so ue_jax did not make it (or its "
                    "record is lost); give a new or empty --workdir")
    return
  record = artifacts.load_json(path)
  if not is_record(record):
    raise UEError(f"{path} is not a ue_jax config record, so {workdir} is "
                  "not a ue_jax workdir; give a new or empty --workdir")
  new = canonical(cfg)
  diff = first_difference(identity(record["config"], "generate"),
                          identity(new, "generate"))
  if diff:
    raise UEError(f"workdir {workdir} was made by a different config "
                  f"({diff}); use another --workdir or pass --overwrite to "
                  "delete its checkpoints and outputs")
  if stages is None:
    return
  for stage, made in _made_with(record, workdir).items():
    diff = first_difference(made, identity(new, stage))
    if diff and stage not in stages:
      readers = [s for s in stages if READS.get(s) == stage]
      why = (f"--stage={readers[0]} would read them" if readers else
             "this run would leave them in place under the new config")
      raise UEError(f"workdir {workdir} holds {stage} outputs of a different "
                    f"config ({diff}); {why}; run --stage={stage} (or "
                    "--stage=all) to redo them, or pass --overwrite to "
                    "delete the outputs")


def _remove(path: str):
  """Removes a file or link, or a whole folder."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  else:
    os.remove(path)


def _clear(workdir: str, folder: str):
  """Deletes ue_jax's entries (`OWNED`, temporaries) of the output
  `folder` (its path in `workdir`), then the folder itself if that left it
  empty; a link in its place is removed, never followed."""
  path = os.path.join(workdir, folder)
  if os.path.islink(path) or not os.path.isdir(path):
    os.remove(path)
    return
  ours = re.compile("|".join(f"(?:{p})" for p in OWNED[folder]
                             + (TEMPORARY,)))
  for name in os.listdir(path):
    inner = f"{folder}/{name}"
    if inner in OWNED and not os.path.islink(os.path.join(path, name)):
      _clear(workdir, inner)
    elif ours.fullmatch(name):
      _remove(os.path.join(path, name))
  if not os.listdir(path):
    os.rmdir(path)


def delete_outputs(workdir: str):
  """Deletes what ue_jax writes in `workdir` (--overwrite): the `OUTPUTS`,
  of their folders only the `OWNED` entries, and the temporaries of its
  atomic writes; every other file stays. The record goes last, so an
  interrupted deletion leaves a ue_jax workdir that --overwrite accepts."""
  if not os.path.isdir(workdir):
    return
  temporaries = [n for n in os.listdir(workdir) if re.fullmatch(TEMPORARY, n)]
  for name in sorted(_outputs(workdir) + temporaries,
                     key=lambda name: name == CONFIG_FILE):
    output = os.path.join(workdir, name)
    if name in OWNED:
      _clear(workdir, name)
    elif name in temporaries:
      _remove(output)
    elif os.path.islink(output) or not os.path.isdir(output):
      os.remove(output)


def claim(cfg, workdir: str, *, overwrite: bool,
          run: Optional[Dict[str, int]] = None) -> str:
  """Creates the workdir (after `verify`), first deleting its outputs with
  `overwrite`, and records the config (and `run`, e.g. the device and
  process counts of this run, as `run`); returns the config.json path."""
  if not artifacts.writes_files():  # multi-process: process 0 claims it
    return os.path.join(workdir, CONFIG_FILE)
  path = os.path.join(workdir, CONFIG_FILE)
  old = None if overwrite else artifacts.load_json(path)
  if overwrite:
    _check_overwritable(workdir)
    delete_outputs(workdir)
  os.makedirs(workdir, exist_ok=True)
  config = canonical(cfg)
  record = {"sha256": config_hash(config), "config": config}
  if old is not None:  # what the outputs already there were made with
    record["stages"] = _made_with(old, workdir)
  if run is not None:
    record["run"] = dict(run)
  return artifacts.save_json(path, record)


def record_stage(cfg, workdir: str, stage: str):
  """Records in config.json (after `claim`) that `stage` finished with
  `cfg`: the identity its outputs were made with."""
  if stage not in STAGE_OUTPUTS or not artifacts.writes_files():
    return
  path = os.path.join(workdir, CONFIG_FILE)
  record = artifacts.load_json(path)
  record.setdefault("stages", {})[stage] = identity(canonical(cfg), stage)
  artifacts.save_json(path, record)


def dependents(stage: str):
  """The stages whose outputs are made from `stage`'s, directly or not
  (READS), in RESULT_STAGES order."""
  found = {stage}
  for later in RESULT_STAGES:  # each stage reads an earlier one
    if READS.get(later) in found:
      found.add(later)
  return tuple(s for s in RESULT_STAGES if s in found and s != stage)


class Results:
  """DIR/results.json, rebuilt after every stage as the union of this
  run's `header` and the stage files present, DIR/results/<stage>.json
  (RESULT_STAGES order): a stage that starts deletes its file and those of
  the stages that depend on it (`dependents`), and writes its file whole
  when done, so no number of an earlier run that this run made stale
  survives. A
  results.json made before the stage files is kept as
  results/before_stage_files.json, not merged."""

  def __init__(self, workdir: str, header: Dict[str, Any]):
    self.workdir, self.header = workdir, dict(header)
    self.folder = os.path.join(workdir, STAGE_RESULTS)
    old = os.path.join(workdir, RESULTS)
    if (artifacts.writes_files() and os.path.exists(old)
        and not os.path.isdir(self.folder)):
      os.makedirs(self.folder)
      os.replace(old, os.path.join(self.folder, "before_stage_files.json"))
    self.stages = {}
    for stage in RESULT_STAGES:
      found = artifacts.load_json(self._path(stage))
      if isinstance(found, dict):
        self.stages[stage] = found

  def _path(self, stage: str) -> str:
    return os.path.join(self.folder, f"{stage}.json")

  def union(self) -> Dict[str, Any]:
    out = dict(self.header)
    for stage in RESULT_STAGES:
      out.update(self.stages.get(stage, {}))
    return out

  def _save(self) -> Dict[str, Any]:
    union = self.union()
    artifacts.save_json(os.path.join(self.workdir, RESULTS), union)
    return union

  def start(self, stage: str) -> Dict[str, Any]:
    """Before `stage` runs (and replaces its outputs): drops its results
    and its dependents', and rewrites results.json."""
    for name in (stage,) + dependents(stage):
      self.stages.pop(name, None)
      if artifacts.writes_files() and os.path.exists(self._path(name)):
        os.remove(self._path(name))
    return self._save()

  def record(self, stage: str, summary: Dict[str, Any]) -> Dict[str, Any]:
    """After `stage` (`start`ed): its results are `summary`; rewrites
    results.json and returns the union."""
    self.stages[stage] = dict(summary)
    artifacts.save_json(self._path(stage), self.stages[stage])
    return self._save()
