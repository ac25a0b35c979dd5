"""Which config a workdir belongs to: DIR/config.json, checked before reuse.

`verify` runs before anything is computed or written and refuses (UEError) a
workdir made by another config unless --overwrite is given; `claim` then
removes the old outputs (with --overwrite) and records the config. The hash is
the sha256 of the config's canonical JSON (sorted keys, no spaces).
"""

import hashlib
import json
import os
import shutil
from typing import Any, Dict, Optional

from ue_jax.io import artifacts
from ue_jax.runtime.errors import UEError

CONFIG_FILE = "config.json"
# Everything a run writes into its workdir; --overwrite deletes these only.
OUTPUTS = (CONFIG_FILE, "checkpoints", "noise.npy", "release", "figure.png",
           "curves.png", "results.json", "metrics.jsonl", "battery")


# Config blocks that do not change what generate/release/evaluate write (the
# battery keys each of its cells by its own settings), so a workdir accepts
# any of their values and its record leaves them out.
MEASUREMENT_ONLY = ("battery",)


def canonical(cfg) -> Dict[str, Any]:
  """The config as plain JSON data (tuples become lists, as on disk),
  without the measurement-only blocks."""
  config = {k: v for k, v in cfg.to_dict().items()
            if k not in MEASUREMENT_ONLY}
  return json.loads(json.dumps(config, sort_keys=True))


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


def verify(cfg, workdir: str, *, overwrite: bool):
  """Refuses a workdir that another config made; reads, never writes."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UEError(f"--workdir {workdir} exists and is not a directory")
  if overwrite or not os.path.isdir(workdir):
    return
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    found = _outputs(workdir)
    if found:
      raise UEError(f"workdir {workdir} holds {', '.join(found)} but no "
                    f"{CONFIG_FILE}, so its config is unknown; use another "
                    "--workdir or pass --overwrite to delete them")
    return
  record = artifacts.load_json(path)
  if not isinstance(record, dict) or "config" not in record:
    raise UEError(f"{path} is not a ue_jax config record; use another "
                  "--workdir or pass --overwrite")
  new = canonical(cfg)
  if record.get("sha256") != config_hash(new) or record["config"] != new:
    diff = first_difference(record["config"], new) or "the hash differs"
    raise UEError(f"workdir {workdir} was made by a different config "
                  f"({diff}); use another --workdir or pass --overwrite to "
                  "delete its checkpoints and outputs")


def claim(cfg, workdir: str, *, overwrite: bool) -> str:
  """Creates the workdir (after `verify`), first deleting its outputs with
  `overwrite`, and records the config; returns the config.json path."""
  if not artifacts.writes_files():  # multi-process: process 0 claims it
    return os.path.join(workdir, CONFIG_FILE)
  if overwrite:
    for name in _outputs(workdir):
      path = os.path.join(workdir, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
  os.makedirs(workdir, exist_ok=True)
  config = canonical(cfg)
  return artifacts.save_json(os.path.join(workdir, CONFIG_FILE),
                             {"sha256": config_hash(config), "config": config})
