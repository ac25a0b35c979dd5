"""Validation of configs and data before any compute; one clear line each.

`SCHEMA` names every config field with its allowed values; `check_config`
refuses unknown, missing and out-of-range fields, `check_data` refuses data
the run cannot use. Every failure is a UEError that names the field and what
it may be, which main.py prints as `error: ...` with exit code 2.
"""

from typing import Dict

import numpy as np
from absl import logging

from ue_jax.config.rules import BIG, Rule, boolean, choice, defense_names
from ue_jax.config.rules import fail, int_tuple, learner_specs, number, text
from ue_jax.core import augment
from ue_jax.core import noise as noise_lib
from ue_jax.io import data as data_lib
from ue_jax.models import MODEL_DTYPES
from ue_jax.models import MODELS

NOISE_KINDS = ("error_min", "error_max", "random", "ar", "lsp", "ops", "tap",
               "sep")
SHORTCUTS = ("ar", "lsp", "ops")  # sample-wise only, no model
TARGETED = ("tap", "sep")  # against frozen pretrained surrogates
def _optimizer(prefix: str) -> Dict[str, Rule]:
  return {f"{prefix}.batch_size": number(1, 1 << 20, integer=True),
          f"{prefix}.eval_batch_size": number(1, 1 << 20, integer=True),
          f"{prefix}.lr": number(0, 100, lo_open=True),
          f"{prefix}.momentum": number(0, 1),
          f"{prefix}.weight_decay": number(0, 1),
          f"{prefix}.grad_clip": number(0, 1e6)}


SCHEMA: Dict[str, Rule] = {
    "name": text(empty=False),
    "seed": number(0, 2**31 - 1, integer=True),
    "data.name": text(empty=False),
    "data.source": choice(*data_lib.SOURCES, noun="data source"),
    "data.data_dir": text(),
    "data.train_path": text(),
    "data.test_path": text(),
    "data.path": text(),
    "data.image_size": number(0, 4096, integer=True),
    "data.cache_dir": text(),
    "data.download": boolean,
    "data.train_size": number(0, BIG, integer=True),
    "data.test_size": number(0, BIG, integer=True),
    "model.name": choice(*sorted(MODELS), noun="model"),
    "model.width": number(1, 4096, integer=True),
    "model.compute_dtype": choice(*MODEL_DTYPES),
    "noise.eps": number(0, 1, lo_open=True),
    "noise.step_size": number(0, 1, lo_open=True),
    "noise.num_steps": number(1, 10_000, integer=True),
    "noise.init": choice("zeros", "uniform", "normal"),
    "noise.random_values": choice(*noise_lib.RANDOM_VALUES),
    "noise.random_patch": number(1, 1 << 16, integer=True),
    "noise.paper_release": boolean,
    "noise.kind": choice(*NOISE_KINDS, noun="noise kind"),
    "noise.ar_norm": choice("linf", "l2"),
    "noise.ar_l2_eps": number(0, 1e6),
    "noise.lsp_l2_eps": number(0, 1e6),
    "noise.ar_crop": number(2, 1024, integer=True),
    "noise.lsp_patch": number(1, 1 << 16, integer=True),
    "noise.eot_augment": choice(*augment.KINDS),
    "noise.eot_samples": number(1, 1024, integer=True),
    "noise.rem_radius": number(0, 1),
    "noise.rem_steps": number(0, 10_000, integer=True),
    "noise.rem_step_size": number(0, 1, lo_open=True),
    "noise.target_shift": number(0, BIG, integer=True),
    "noise.sep_members": number(1, 10_000, integer=True),
    "noise.form": choice(*noise_lib.FORMS, noun="noise form"),
    "noise.form_block": number(1, 1 << 16, integer=True),
    "noise.at_bound": boolean,
    "noise.fit_classes": int_tuple,
    "noise.layout": choice(*noise_lib.LAYOUTS, noun="noise layout"),
    "noise.storage": choice(*noise_lib.STORAGES),
    "mesh.data": number(0, 1 << 20, integer=True),
    **_optimizer("generate"),
    "generate.train_steps": number(0, 1_000_000, integer=True),
    "generate.model_order": choice(*data_lib.MODEL_ORDERS),
    "generate.stop_accuracy": number(0, 1),
    "generate.min_rounds": number(1, 100_000, integer=True),
    "generate.augment": choice(*augment.KINDS),
    "generate.max_rounds": number(1, 100_000, integer=True),
    "generate.max_seconds": number(0, 1e9),
    "generate.classwise_subset": number(0, 1, lo_open=True),
    "generate.error_max_stop_accuracy": number(0, 1),
    "generate.pretrain_epochs": number(0, 10_000, integer=True),
    "evaluate.model": choice("", *sorted(MODELS), noun="model"),
    "evaluate.width": number(0, 4096, integer=True),
    "evaluate.epochs": number(1, 10_000, integer=True),
    **_optimizer("evaluate"),
    "evaluate.augment": choice(*augment.KINDS),
    "evaluate.seed": number(0, 2**31 - 1, integer=True),
    "evaluate.train_clean": boolean,
    "partial.rate": number(0, 1),
    "partial.classes": int_tuple,
    "release.noise_path": text(),
    "battery.enabled": boolean,
    "battery.release_path": text(),
    "battery.learners": learner_specs,
    "battery.defenses": defense_names,
    "battery.cells": choice("star", "cross"),
    "battery.epochs": number(0, 10_000, integer=True),
    "battery.batch_size": number(0, 1 << 20, integer=True),
    "battery.lr": number(0, 100),
    "battery.seed": number(0, 2**31 - 1, integer=True),
    "battery.test_size": number(0, BIG, integer=True),
    "battery.adv_eps": number(0, 1),
    "battery.adv_steps": number(1, 1000, integer=True),
    "battery.ueraser_copies": number(1, 64, integer=True),
    "battery.clean_cache": text(),
    "release.one_pixel": boolean,
    "checkpoint.every_batches": number(0, BIG, integer=True),
    "checkpoint.every_seconds": number(0, 1e9),
    "checkpoint.max_to_keep": number(1, 1000, integer=True),
}


def snapped(cfg):
  """`cfg`, or a copy whose noise.eps is snapped to k/255 (noise.snap_eps),
  with a log line; a rerun with the same flags snaps the same way, so the
  workdir's config record matches."""
  eps = noise_lib.snap_eps(cfg.noise.eps)
  if eps == cfg.noise.eps:
    return cfg
  logging.info("noise.eps=%r is taken as %d/255 = %r (within %g of it)",
               cfg.noise.eps, round(eps * 255), eps, noise_lib.EPS_SNAP)
  cfg = cfg.copy_and_resolve_references()
  cfg.noise.eps = eps
  return cfg


def flatten(tree, prefix: str = "") -> Dict[str, object]:
  """{'a.b': value} for a nested dict or ConfigDict."""
  out = {}
  for key, value in tree.items():
    if hasattr(value, "items"):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_fields(cfg, schema: Dict[str, Rule], *,
                 base: str = "configs/common.py base()"):
  """Every field of `cfg` known to `schema`, present and in range."""
  fields = flatten(cfg)
  for name in fields:
    if name not in schema:
      fail(f"unknown config field {name}; the fields are those of {base}")
  for name, rule in schema.items():
    if name not in fields:
      fail(f"config field {name} is missing; start the config from {base}")
    problem = rule(name, fields[name])
    if problem:
      fail(problem)


def _search_rules(cfg):
  """Rules across the search fields, for every kind of config."""
  g, n = cfg.generate, cfg.noise
  if g.min_rounds > g.max_rounds:
    fail(f"generate.min_rounds={g.min_rounds} must not exceed "
         f"generate.max_rounds={g.max_rounds}")
  if n.kind != "random" and (n.random_patch != 1
                             or n.random_values != "uniform"):
    fail(f"noise.random_patch / noise.random_values shape the random "
         f"baseline only; noise.kind={n.kind!r} does not use them (leave "
         "them at 1 / 'uniform')")
  if n.kind in SHORTCUTS and n.layout != "samplewise":
    fail(f"noise.kind={n.kind!r} gives every image its own noise; set "
         f"noise.layout='samplewise' (got {n.layout!r})")
  one_pixel = "release" in cfg and cfg.release.one_pixel  # protect: none
  if (n.kind == "ops") != one_pixel:
    fail("noise.kind='ops' changes one pixel per image beyond eps and needs "
         "release.one_pixel=True; release.one_pixel is for noise.kind='ops' "
         f"only (got noise.kind={n.kind!r}, release.one_pixel={one_pixel})")
  if n.eot_samples > 1 and n.eot_augment == "none":
    fail(f"noise.eot_samples={n.eot_samples} averages over random "
         "augmentations; set noise.eot_augment (e.g. 'crop') or leave "
         "eot_samples at 1")
  if (n.eot_augment != "none" or n.eot_samples > 1) and n.kind not in (
      "error_min", "error_max", *TARGETED):
    fail(f"noise.eot_augment / noise.eot_samples shape the PGD of error_min, "
         f"tap, sep and error_max; noise.kind={n.kind!r} has none (leave "
         "them at 'none' / 1)")
  if n.form != "rgb" and n.kind not in ("error_min", "error_max"):
    fail(f"noise.form={n.form!r} shapes the PGD of error_min and error_max; "
         f"noise.kind={n.kind!r} has none (leave it at 'rgb')")
  if n.fit_classes and (n.init != "zeros"
                        or n.kind not in ("error_min", "error_max")):
    fail(f"noise.fit_classes={tuple(n.fit_classes)!r} searches the noise of "
         "some classes and leaves the others' at zero: it needs "
         "noise.init='zeros' and noise.kind error_min or error_max (got "
         f"{n.init!r}, {n.kind!r})")
  if n.at_bound and n.kind not in ("error_min", "error_max") + TARGETED:
    fail(f"noise.at_bound writes a searched noise at the bound; "
         f"noise.kind={n.kind!r} is not searched (random: "
         "noise.random_values='sign' draws at the bound)")
  if n.rem_radius and n.kind != "error_min":
    fail(f"noise.rem_radius={n.rem_radius} (robust error-minimizing noise) "
         f"needs noise.kind='error_min', got {n.kind!r}")
  if n.rem_radius > n.eps:
    fail(f"noise.rem_radius={n.rem_radius} must not exceed noise.eps="
         f"{n.eps} (REM's adversary is weaker than the noise)")
  _targeted_rules(g, n)


def _targeted_rules(g, n):
  """tap and sep attack a surrogate pretrained on the clean images and then
  frozen (sep: an ensemble of its pretraining checkpoints)."""
  if n.kind not in TARGETED:
    if n.target_shift:
      fail(f"noise.target_shift={n.target_shift} sets the target classes of "
           f"tap and sep; noise.kind={n.kind!r} has none (leave it at 0)")
    return
  if g.train_steps:
    fail(f"noise.kind={n.kind!r} attacks a frozen surrogate: set "
         f"generate.train_steps=0 (got {g.train_steps})")
  need = n.sep_members if n.kind == "sep" else 1
  if g.pretrain_epochs < need:
    what = (f"its ensemble, noise.sep_members={n.sep_members} checkpoints of "
            "it" if n.kind == "sep" else "its surrogate")
    fail(f"noise.kind={n.kind!r} takes {what} from the pretraining on clean "
         f"images: generate.pretrain_epochs must be at least {need} (got "
         f"{g.pretrain_epochs})")


def check_config(cfg):
  """Every field known, present and in range; then rules across fields."""
  if "protect" in cfg:
    fail(f"config {cfg.name!r} has a protect block: it is the folder tool's "
         "config; run it with python -m ue_jax.protect --input=FOLDER "
         "--output=FOLDER")
  check_fields(cfg, SCHEMA)
  _search_rules(cfg)
  d = cfg.data
  if cfg.partial.classes and cfg.partial.rate != 1.0:
    fail(f"partial.classes={tuple(cfg.partial.classes)!r} protects whole "
         f"classes; partial.rate={cfg.partial.rate} must then stay 1.0 (give "
         "one or the other)")
  source = data_lib.resolve_source(d.name, d.source, d.data_dir)
  if source not in ("npz", "folder") and d.name not in data_lib.TFDS_NAMES:
    fail(f"unknown dataset {d.name!r} (data.name) for data.source="
         f"{source}; choose one of {', '.join(data_lib.TFDS_NAMES)}, or "
         "data.source=npz with data.train_path and data.test_path, or "
         "data.source=folder with data.path")
  if source == "npz" and not (d.train_path and d.test_path):
    fail("data.source=npz needs data.train_path and data.test_path")
  if source != "folder" and (d.path or d.image_size):
    fail(f"data.path / data.image_size are read by data.source=folder "
         f"only; got data.source={d.source!r} (set --config.data.source="
         "folder, or leave them empty / 0)")
  # A folder source's paths are checked when it is read (folder_source.py),
  # still before the workdir is touched.


def check_data(cfg, train: data_lib.Dataset, test: data_lib.Dataset):
  """The loaded splits (before subsets) against each other and the config."""
  d = cfg.data
  for split, ds in (("training", train), ("test", test)):
    if not len(ds):
      fail(f"the {split} split of {d.name!r} is empty")
    _, h, w, c = ds.images.shape
    if c not in (1, 3) or min(h, w) < 2:
      fail(f"{split} images of {d.name!r} are {h}x{w}x{c}; expected HxWx1 "
           "or HxWx3 with H, W >= 2")
  if train.images.shape[1:] != test.images.shape[1:]:
    fail(f"train images {train.images.shape[1:]} and test images "
         f"{test.images.shape[1:]} differ in shape")
  present = np.unique(train.labels)
  if len(present) < 2:
    fail(f"the training labels of {d.name!r} hold a single class "
         f"({present[0]}); need at least 2")
  for field, size, ds in (("data.train_size", d.train_size, train),
                          ("data.test_size", d.test_size, test)):
    if size > len(ds):
      fail(f"{field}={size} exceeds the {len(ds)} examples of the split; "
           f"choose at most {len(ds)} (0 takes them all)")
  n = d.train_size or len(train)
  for field in ("partial.classes", "noise.fit_classes"):
    for c in cfg[field.split(".")[0]][field.split(".")[1]]:
      if c >= train.num_classes:
        fail(f"{field} names class {c}, but {d.name!r} has classes 0.."
             f"{train.num_classes - 1}")
  if d.train_size and d.train_size < train.num_classes:
    fail(f"data.train_size={d.train_size} is smaller than the "
         f"{train.num_classes} classes")
  shift = cfg.noise.target_shift
  if cfg.noise.kind in TARGETED and shift and shift % train.num_classes == 0:
    fail(f"noise.target_shift={shift} is a multiple of the "
         f"{train.num_classes} classes: every image would keep its own class "
         "as target; choose a shift that is not")
  if cfg.noise.kind == "lsp":
    from ue_jax.core import shortcuts  # pylint: disable=g-import-not-at-top
    dim = shortcuts.lsp_blocks(train.images.shape[1:], cfg.noise.lsp_patch)
    if dim < 63 and train.num_classes > 2 ** dim:
      fail(f"noise.kind='lsp' needs a distinct vertex per class: "
           f"{train.num_classes} classes, but noise.lsp_patch="
           f"{cfg.noise.lsp_patch} leaves {dim} block value(s) per image, "
           f"{2 ** dim} distinct vertices; choose a smaller noise.lsp_patch")
  for field, size in (("generate.batch_size", cfg.generate.batch_size),
                      ("evaluate.batch_size", cfg.evaluate.batch_size),
                      ("battery.batch_size", cfg.battery.batch_size)):
    if size > n:
      fail(f"{field}={size} exceeds the {n} training images; choose at most "
           f"{n}")


# `python -m ue_jax.protect` (configs/protect.py): the search and evaluation
# fields of base(), without the dataset, partial protection and release
# blocks (the data is the --input folder), plus the `protect` block.
PROTECT_SCHEMA: Dict[str, Rule] = {
    **{k: v for k, v in SCHEMA.items()
       if not k.startswith(("data.", "partial.", "release.", "battery."))},
    "protect.size": number(2, 4096, integer=True),
    "protect.channels": number(0, 3, integer=True),
    "protect.upsample": choice("bilinear", "nearest"),
    "protect.preview": number(0, 64, integer=True),
}


def check_protect_config(cfg):
  """A protect config: its fields, then the rules across them."""
  check_fields(cfg, PROTECT_SCHEMA, base="configs/protect.py")
  _search_rules(cfg)
  if cfg.protect.channels == 2:
    fail("protect.channels must be 0 (1 for gray folders, else 3), 1 or 3, "
         "got 2")
