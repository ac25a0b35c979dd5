"""Bad input through the command line: exit code 2, one `error:` line naming
the problem, no traceback, and the workdir untouched (not even created).

The cases are data (`CASES`); docs/errors.md shows them as a table that
`python -m tests.bad_input_table --write` generates and `test_refused` checks
row by row against the CLI's message.
"""

import collections
import io
import json
import os
import subprocess
import tarfile
import tempfile

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from tests import helpers
from ue_jax.io import metrics as metrics_lib
from ue_jax.io import workdir as workdir_lib
from ue_jax.runtime.errors import UEError
from configs import test_tiny

Case = collections.namedtuple(
    "Case", "name overrides message stage workdir config data",
    defaults=("release", "new", "configs/test_tiny.py", True))
# `overrides` may name fixture files as {tmp}/...; `workdir` is "new" (does
# not exist), "used" (made by a config with another eps), "released" (the
# same config, with a release recorded) or "file"; `data`
# False runs without the tiny .npz data overrides (for a config that has no
# data block).
CASES = (
    # Flags, parsed by absl and ml_collections.
    Case("not_a_number", ["--config.noise.eps=abc"],
         "could not convert string to float: 'abc'"),
    Case("unknown_field", ["--config.foo=1"],
         "--config.foo: no such config field"),
    Case("misspelt_field", ["--config.noise.epss=0.1"],
         'Did you mean "eps" instead of "epss"?'),
    Case("missing_config_file", [],
         "No such file or directory: 'configs/no_such.py'",
         config="configs/no_such.py"),
    Case("unknown_config_variant", [], "cannot load --config: ValueError: "
         "unknown config argument 'layot'; keys: scale, layout, kind, robust",
         config="configs/cifar10_samplewise.py:layot=classwise"),
    Case("unknown_stage", [], "value should be one of <all|generate|release|",
         stage="train"),
    Case("extra_argument", ["extra"], "unexpected arguments: extra"),
    Case("cpu_devices_zero", ["--cpu_devices=0"],
         "--cpu_devices=0: use -1 (one per core) or a positive count"),
    Case("protect_config", [], "config 'protect' has a protect block: it is "
         "the folder tool's config; run it with python -m ue_jax.protect",
         config="configs/protect.py", data=False),
    # Config values.
    Case("eps_zero", ["--config.noise.eps=0.0"],
         "noise.eps must lie in (0, 1], got 0.0"),
    Case("no_pgd_steps", ["--config.noise.num_steps=0"],
         "noise.num_steps must lie in [1, 10000], got 0"),
    Case("step_size_zero", ["--config.noise.step_size=0.0"],
         "noise.step_size must lie in (0, 1], got 0.0"),
    Case("unknown_model", ["--config.model.name=vgg19"],
         "unknown model 'vgg19' (model.name); choose one of"),
    Case("unknown_augment", ["--config.evaluate.augment=rotate"],
         "evaluate.augment must be one of 'none', 'crop', 'crop_flip'"),
    Case("unknown_source", ["--config.data.source=csv"],
         "unknown data source 'csv' (data.source)"),
    Case("unknown_dataset", ["--config.data.source=tfds",
                             "--config.data.name=imagenet42"],
         "unknown dataset 'imagenet42'"),
    Case("min_rounds_over_max", ["--config.generate.min_rounds=3",
                                 "--config.generate.max_rounds=2"],
         "generate.min_rounds=3 must not exceed generate.max_rounds=2"),
    Case("learning_rate_zero", ["--config.generate.lr=0.0"],
         "generate.lr must lie in (0, 100], got 0.0"),
    Case("keep_no_checkpoint", ["--config.checkpoint.max_to_keep=0"],
         "checkpoint.max_to_keep must lie in [1, 1000], got 0"),
    Case("unknown_compute_dtype", ["--config.model.compute_dtype=float16"],
         "model.compute_dtype must be one of 'float32', 'bfloat16', got "
         "'float16'"),
    Case("negative_time_cap", ["--config.generate.max_seconds=-1.0"],
         "generate.max_seconds must lie in [0, 1000000000.0], got -1.0"),
    Case("unknown_noise_kind", ["--config.noise.kind=min-min"],
         "unknown noise kind 'min-min' (noise.kind); choose one of "
         "'error_min', 'error_max', 'random', 'ar', 'lsp', 'ops'"),
    Case("classwise_shortcut", ["--config.noise.kind=ar",
                                "--config.noise.layout=classwise"],
         "noise.kind='ar' gives every image its own noise; set "
         "noise.layout='samplewise'"),
    Case("ops_without_one_pixel", ["--config.noise.kind=ops"],
         "noise.kind='ops' changes one pixel per image beyond eps and needs "
         "release.one_pixel=True"),
    Case("one_pixel_for_eps_noise", ["--config.release.one_pixel=True"],
         "release.one_pixel is for noise.kind='ops' only"),
    Case("one_pixel_noise_two_pixels",
         ["--config.noise.kind=ops", "--config.release.one_pixel=True",
          "--config.release.noise_path={tmp}/noise_two_pixels.npy"],
         "changes 2 pixels of an image; release.one_pixel allows one"),
    Case("eot_samples_zero", ["--config.noise.eot_samples=0"],
         "noise.eot_samples must lie in [1, 1024], got 0"),
    Case("eot_samples_without_augment", ["--config.noise.eot_samples=4"],
         "noise.eot_samples=4 averages over random augmentations; set "
         "noise.eot_augment"),
    Case("eot_for_shortcut", ["--config.noise.kind=lsp",
                              "--config.noise.eot_augment=crop"],
         "noise.eot_augment / noise.eot_samples shape the PGD of error_min, "
         "tap, sep and error_max; noise.kind='lsp' has none"),
    Case("at_bound_for_random", ["--config.noise.kind=random",
                                 "--config.noise.at_bound=True"],
         "noise.at_bound writes a searched noise at the bound; "
         "noise.kind='random' is not searched"),
    Case("rem_radius_over_eps", ["--config.noise.rem_radius=0.5"],
         "noise.rem_radius=0.5 must not exceed noise.eps"),
    Case("rem_for_error_max", ["--config.noise.kind=error_max",
                               "--config.noise.rem_radius=0.01"],
         "needs noise.kind='error_min', got 'error_max'"),
    Case("unknown_ar_norm", ["--config.noise.ar_norm=l1"],
         "noise.ar_norm must be one of 'linf', 'l2', got 'l1'"),
    Case("unknown_noise_layout", ["--config.noise.layout=patch"],
         "unknown noise layout 'patch' (noise.layout)"),
    Case("patch_for_searched_noise", ["--config.noise.random_patch=4"],
         "noise.random_patch / noise.random_values shape the random baseline "
         "only; noise.kind='error_min' does not use them"),
    Case("poison_rate_over_one", ["--config.partial.rate=1.5"],
         "partial.rate must lie in [0, 1], got 1.5"),
    Case("rate_and_classes", ["--config.partial.rate=0.5",
                              "--config.partial.classes=(1,)"],
         "partial.rate=0.5 must then stay 1.0"),
    Case("protected_class_out_of_range", ["--config.partial.classes=(9,)"],
         "partial.classes names class 9, but 'synthetic' has classes 0..3"),
    Case("classwise_noise_wrong_shape",
         ["--config.noise.layout=classwise",
          "--config.release.noise_path={tmp}/noise_shape.npy"],
         "has shape (5, 12, 12, 1) but the dataset needs (4, 12, 12, 1)"),
    # Data.
    Case("missing_data_folder", ["--config.data.name=fashion_mnist",
                                 "--config.data.source=idx",
                                 "--config.data.data_dir=/nonexistent/fmnist"],
         "data folder /nonexistent/fmnist does not exist"),
    Case("float_images", ["--config.data.train_path={tmp}/float_images.npz"],
         "images must be uint8 (0..255), got float32"),
    Case("test_label_out_of_range",
         ["--config.data.test_path={tmp}/label_7.npz"],
         "labels must lie in [0, 4), got [0, 7]"),
    Case("single_class", ["--config.data.train_path={tmp}/one_class.npz",
                          "--config.data.test_path={tmp}/one_class.npz"],
         "hold a single class (2); need at least 2"),
    Case("lsp_classes_over_vertices", ["--config.noise.kind=lsp",
                                       "--config.noise.lsp_patch=12"],
         "noise.kind='lsp' needs a distinct vertex per class: 4 classes, "
         "but noise.lsp_patch=12 leaves 1 block value(s) per image, 2 "
         "distinct vertices"),
    Case("batch_over_data", ["--config.generate.batch_size=200"],
         "generate.batch_size=200 exceeds the 96 training images"),
    Case("subset_over_data", ["--config.data.train_size=1000"],
         "data.train_size=1000 exceeds the 96 examples"),
    # Image folders (data.source=folder): the trees of make_folder_fixtures.
    Case("folder_without_path", ["--config.data.source=folder"],
         "data.source=folder needs data.path"),
    Case("path_without_folder_source", ["--config.data.image_size=32"],
         "data.path / data.image_size are read by data.source=folder only"),
    Case("folder_missing_path", ["--config.data.source=folder",
                                 "--config.data.path=/nonexistent/images"],
         "data.path /nonexistent/images does not exist"),
    Case("folder_without_test", ["--config.data.source=folder",
                                 "--config.data.path={tmp}/only_train"],
         "holds no test/ folder (found: train)"),
    Case("folder_empty_class", ["--config.data.source=folder",
                                "--config.data.path={tmp}/empty_class.tar"],
         "class folder train/emu of"),
    Case("folder_corrupt_image", ["--config.data.source=folder",
                                  "--config.data.path={tmp}/corrupt_image"],
         "test/dog/01.png is unusable: not a readable image"),
    Case("folder_tar_escape", ["--config.data.source=folder",
                               "--config.data.path={tmp}/escape.tgz"],
         "tar member '../evil.png' points outside the tree"),
    Case("folder_mixed_sizes", ["--config.data.source=folder",
                                "--config.data.path={tmp}/mixed_sizes"],
         "train/dog/02.png is 13x9 pixels, but the first image"),
    Case("folder_classes_differ",
         ["--config.data.source=folder",
          "--config.data.train_path={tmp}/classes_ab",
          "--config.data.test_path={tmp}/classes_ac"],
         "class folders differ: test lacks 'b'; test has 'c', which train "
         "lacks"),
    # Noise and released files.
    Case("noise_wrong_shape",
         ["--config.release.noise_path={tmp}/noise_shape.npy"],
         "has shape (5, 12, 12, 1) but the dataset needs (96, 12, 12, 1)"),
    Case("noise_over_eps", ["--config.release.noise_path={tmp}/noise_big.npy"],
         "exceeds epsilon: max |noise| = 0.500000 > 0.031373"),
    Case("noise_not_finite",
         ["--config.release.noise_path={tmp}/noise_nan.npy"],
         "holds non-finite values"),
    Case("noise_needs_pickle",
         ["--config.release.noise_path={tmp}/noise_pickle.npy"],
         "cannot be read without pickle, which is refused"),
    Case("evaluate_before_release", [], "no released dataset at",
         stage="evaluate"),
    # The battery.
    Case("battery_unknown_learner",
         ["--config.battery.learners=('small_cnn','lenet')"],
         "unknown learner 'lenet' (battery.learners); choose one of",
         stage="battery"),
    Case("battery_learner_width", ["--config.battery.learners=('vgg11:0',)"],
         "learner 'vgg11:0' (battery.learners): the width after ':' must be "
         "an integer in [1, 4096]", stage="battery"),
    Case("battery_unknown_defense",
         ["--config.battery.defenses=('none','jpeg')"],
         "unknown defense 'jpeg' (battery.defenses); choose from",
         stage="battery"),
    Case("battery_epochs_negative", ["--config.battery.epochs=-1"],
         "battery.epochs must lie in [0, 10000], got -1", stage="battery"),
    Case("battery_no_adv_steps", ["--config.battery.adv_steps=0"],
         "battery.adv_steps must lie in [1, 1000], got 0", stage="battery"),
    Case("battery_batch_over_data", ["--config.battery.batch_size=200"],
         "battery.batch_size=200 exceeds the 96 training images",
         stage="battery"),
    Case("battery_batch_over_devices",
         ["--cpu_devices=2", "--config.battery.batch_size=15"],
         "battery.batch_size=15 must be a multiple of the 2 devices",
         stage="battery"),
    # Refused before the search, not when the evaluate stage starts.
    Case("evaluate_batch_over_devices",
         ["--cpu_devices=2", "--config.evaluate.batch_size=15"],
         "evaluate.batch_size=15 must be a multiple of the 2 devices",
         stage="all"),
    Case("evaluate_eval_batch_over_devices_on_generate",
         ["--cpu_devices=2", "--config.noise.kind=error_max",
          "--config.generate.pretrain_epochs=1",
          "--config.evaluate.eval_batch_size=15"],
         "evaluate.eval_batch_size=15 must be a multiple of the 2 devices",
         stage="generate"),
    Case("battery_before_release", [], "no released dataset at",
         stage="battery"),
    Case("battery_release_rows",
         ["--config.battery.release_path={tmp}/release_rows.npz"],
         "the configured training set needs uint8 [96,H,W,C]",
         stage="battery"),
    Case("battery_release_indices",
         ["--config.battery.release_path={tmp}/release_indices.npz"],
         "holds other examples (labels or indices differ) than the "
         "configured training set", stage="battery"),
    # The workdir.
    Case("workdir_of_other_config", [],
         "was made by a different config (noise.eps: 0.06274509803921569 "
         "there, 0.03137254901960784 now)", workdir="used"),
    Case("overwrite_deletes_input", ["--overwrite"],
         "--overwrite would delete", stage="evaluate", workdir="used"),
    Case("workdir_is_a_file", [], "exists and is not a directory",
         workdir="file"),
    Case("stale_release", ["--config.partial.rate=0.5"],
         "holds release outputs of a different config (partial.rate: 1.0 "
         "there, 0.5 now)", stage="evaluate", workdir="released"),
)


def tiny_config(train, test, **noise):
  cfg = test_tiny.get_config()
  cfg.data.train_path, cfg.data.test_path = train, test
  cfg.noise.update(noise)
  return cfg


def make_fixtures(tmp):
  """Writes the data, bad files and workdirs the cases refer to."""
  train, test = helpers.write_npz(tmp)
  clean = np.load(train, allow_pickle=False)
  images, labels = clean["images"], clean["labels"]
  np.savez(os.path.join(tmp, "float_images.npz"),
           images=images.astype(np.float32) / 255, labels=labels)
  np.savez(os.path.join(tmp, "label_7.npz"), images=images[:64],
           labels=np.where(np.arange(64) == 5, 7, labels[:64]))
  np.savez(os.path.join(tmp, "one_class.npz"), images=images,
           labels=np.full_like(labels, 2))
  shape = images.shape
  np.save(os.path.join(tmp, "noise_shape.npy"),
          np.zeros((5, *shape[1:]), np.float32))
  np.save(os.path.join(tmp, "noise_big.npy"), np.full(shape, 0.5, np.float32))
  two = np.zeros(shape, np.float32)
  two[5, 0, 0, 0] = two[5, 3, 3, 0] = 0.5
  np.save(os.path.join(tmp, "noise_two_pixels.npy"), two)
  nan = np.zeros(shape, np.float32)
  nan[3, 2, 1, 0] = np.nan
  np.save(os.path.join(tmp, "noise_nan.npy"), nan)
  np.save(os.path.join(tmp, "noise_pickle.npy"),
          np.array([{"noise": 0}], dtype=object), allow_pickle=True)
  indices = np.arange(len(labels))
  np.savez(os.path.join(tmp, "release_rows.npz"), images=images[:48],
           labels=labels[:48], indices=indices[:48])
  np.savez(os.path.join(tmp, "release_indices.npz"), images=images,
           labels=labels, indices=indices[::-1])
  used = os.path.join(tmp, "used")
  workdir_lib.claim(tiny_config(train, test, eps=16 / 255), used,
                    overwrite=False)
  for name in ("noise.npy", os.path.join("checkpoints", "1", "state")):
    os.makedirs(os.path.dirname(os.path.join(used, name)), exist_ok=True)
    with open(os.path.join(used, name), "w", encoding="utf-8") as f:
      f.write("stand-in\n")
  with open(os.path.join(tmp, "a_file"), "w", encoding="utf-8") as f:
    f.write("not a directory\n")
  make_folder_fixtures(tmp)
  released = os.path.join(tmp, "released")
  stand_in_stage(tiny_config(train, test), released, "release")
  return {"tmp": tmp, "train": train, "test": test, "used": used,
          "released": released, "file": os.path.join(tmp, "a_file")}


def stand_in_stage(cfg, workdir, stage):
  """Claims `workdir` for `cfg` (if new), writes stand-ins of `stage`'s
  outputs and records the stage as done with `cfg`."""
  if not os.path.exists(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
    workdir_lib.claim(cfg, workdir, overwrite=False)
  for name in workdir_lib.STAGE_OUTPUTS[stage]:
    path = os.path.join(workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write("stand-in\n")
  workdir_lib.record_stage(cfg, workdir, stage)


def make_folder_fixtures(tmp):
  """Image trees (and tars of them) with one problem each."""
  j = os.path.join
  helpers.write_image_tree(j(tmp, "only_train"), splits=("train",))
  helpers.write_image_tree(j(tmp, "empty_class"))
  os.makedirs(j(tmp, "empty_class", "train", "emu"))
  with open(j(tmp, "empty_class", "train", "emu", "notes.txt"), "w",
            encoding="utf-8") as f:
    f.write("no images\n")
  helpers.tar_tree(j(tmp, "empty_class"), j(tmp, "empty_class.tar"))
  helpers.write_image_tree(j(tmp, "corrupt_image"))
  with open(j(tmp, "corrupt_image", "test", "dog", "01.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\nbroken")
  helpers.write_image_tree(j(tmp, "escape"))
  with open(j(tmp, "escape", "test", "dog", "00.png"), "rb") as f:
    png = f.read()
  with tarfile.open(j(tmp, "escape.tgz"), "w:gz") as tar:
    for split in ("train", "test"):
      tar.add(j(tmp, "escape", split), arcname=split)
    evil = tarfile.TarInfo("../evil.png")
    evil.size = len(png)
    tar.addfile(evil, io.BytesIO(png))
  helpers.write_image_tree(j(tmp, "mixed_sizes"))
  helpers.write_image_tree(j(tmp, "odd"), size=(13, 9), per_class=1, seed=3)
  os.replace(j(tmp, "odd", "train", "dog", "00.png"),
             j(tmp, "mixed_sizes", "train", "dog", "02.png"))
  helpers.write_image_tree(j(tmp, "classes_ab"), classes=("a", "b"),
                           splits=("",))
  helpers.write_image_tree(j(tmp, "classes_ac"), classes=("a", "c"),
                           splits=("",))


ERRORS_PAGE = os.path.join(helpers.REPO, "docs", "errors.md")
TABLE_BEGIN = ("<!-- generated by tests/bad_input_table.py from "
               "bad_input_test.CASES; edit the cases, not this table -->")
TABLE_END = "<!-- end of the generated table -->"
TABLE_HEAD = [
    "Each row runs `python -m ue_jax.main --config=configs/test_tiny.py "
    "--workdir=DIR --stage=release` on tiny .npz data (the folder_ cases: "
    "on the small image trees they name) with the listed changes; every one "
    "exits with code 2, prints one `error:` line and leaves DIR as it was "
    "(absent, or unchanged). `$TMP` stands for the folder of the test files.",
    "",
    "| case | command-line overrides | error message |",
    "|---|---|---|"]


def table_row(case, proc, tmp) -> str:
  """The page's row for `case`, from the CLI run `proc` (fixtures in tmp)."""
  message = proc.stderr.strip().splitlines()[-1].replace(tmp, "$TMP")
  flags = [o.format(tmp="$TMP") for o in case.overrides]
  if case.stage != "release":
    flags.append(f"--stage={case.stage}")
  if case.config != "configs/test_tiny.py":
    flags.append(f"--config={case.config}")
  flags += {"used": ["(DIR made by a config with noise.eps=16/255)"],
            "released": ["(DIR holds a release of the same config with "
                         "partial.rate=1.0)"],
            "file": ["(DIR is a file)"]}.get(case.workdir, [])
  shown = " ".join(f"`{f}`" if f.startswith(("-", "extra")) else f
                   for f in flags)
  cells = [case.name, shown or "(none)",
           f"{message} (exit {proc.returncode})"]
  return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def page_table() -> tuple:
  """(text before, the generated table, text after) of docs/errors.md."""
  with open(ERRORS_PAGE, encoding="utf-8") as f:
    text = f.read()
  head, rest = text.split(TABLE_BEGIN + "\n", 1)
  table, tail = rest.split("\n" + TABLE_END, 1)
  return head, table, tail


def write_table(table: str) -> None:
  head, _, tail = page_table()
  with open(ERRORS_PAGE, "w", encoding="utf-8") as f:
    f.write(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")


def page_rows() -> dict:
  """The page's table rows by case name."""
  return {line.split(" | ", 1)[0][2:]: line
          for line in page_table()[1].splitlines() if line.startswith("| ")
          and not line.startswith(("| case ", "|---"))}


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def case_workdir(case, fixtures):
  if case.workdir == "new":
    return os.path.join(fixtures["tmp"], "new_" + case.name)
  return fixtures[case.workdir]


def run_case(case, fixtures, env=None):
  """Runs one case through the CLI; returns the CompletedProcess."""
  overrides = []
  if case.data and "--config.data.source=folder" not in case.overrides:
    # (a folder case names its image trees)
    overrides = [f"--config.data.train_path={fixtures['train']}",
                 f"--config.data.test_path={fixtures['test']}"]
  overrides += [o.format(tmp=fixtures["tmp"]) for o in case.overrides]
  cmd = helpers.main_command(case_workdir(case, fixtures), *overrides,
                             stage=case.stage, config=case.config)
  return subprocess.run(cmd, cwd=helpers.REPO, capture_output=True,
                        text=True, timeout=300, check=False, env=env)


def snapshot(path):
  """Every entry under `path` with its size and mtime; None if absent."""
  if not os.path.lexists(path):
    return None
  entries = {".": os.lstat(path).st_mtime_ns}
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(root, name)
      stat = os.lstat(full)
      entries[os.path.relpath(full, path)] = (stat.st_size, stat.st_mtime_ns)
  return entries


class BadInputTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fixtures = make_fixtures(tempfile.mkdtemp(prefix="ue_jax_bad_"))

  def test_at_least_twenty_kinds(self):
    self.assertGreaterEqual(len(CASES), 20)
    self.assertLen({case.name for case in CASES}, len(CASES))

  @parameterized.named_parameters(*((c.name, c) for c in CASES))
  def test_refused(self, case):
    workdir = case_workdir(case, self.fixtures)
    before = snapshot(workdir)
    proc = run_case(case, self.fixtures)
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertNotIn("Traceback", proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    self.assertTrue(last.startswith("error: "), last)
    self.assertIn(case.message, last)
    self.assertEqual(snapshot(workdir), before)
    self.assertEqual(
        page_rows().get(case.name), table_row(case, proc, self.fixtures["tmp"]),
        "docs/errors.md's row differs from what the CLI says now; rerun "
        "PYTHONPATH=. python -m tests.bad_input_table --write")

  def test_the_page_lists_every_case_in_order(self):
    self.assertEqual(list(page_rows()), [case.name for case in CASES])
    self.assertEqual(page_table()[1].splitlines()[:len(TABLE_HEAD)],
                     TABLE_HEAD)


class WorkdirTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.train, self.test = helpers.write_npz(self.tmp, n_train=16,
                                              n_test=8)

  def test_same_config_is_accepted_and_recorded(self):
    cfg = tiny_config(self.train, self.test)
    path = workdir_lib.claim(cfg, os.path.join(self.tmp, "w"),
                             overwrite=False)
    record = read_json(path)
    self.assertEqual(record["sha256"],
                     workdir_lib.config_hash(workdir_lib.canonical(cfg)))
    workdir_lib.verify(tiny_config(self.train, self.test),
                       os.path.join(self.tmp, "w"), overwrite=False)

  def test_operational_fields_do_not_refuse_a_resume(self):
    """Fields that change no output (checkpoint.*, the name), and evaluate.*
    before any evaluation exists, are accepted on the same workdir; a noise
    field is not, nor evaluate.* where the error-max pretraining uses it."""
    workdir = os.path.join(self.tmp, "w")
    workdir_lib.claim(tiny_config(self.train, self.test), workdir,
                      overwrite=False)
    cfg = tiny_config(self.train, self.test)
    cfg.name = "renamed"
    cfg.checkpoint.every_seconds = 5.0
    cfg.checkpoint.every_batches = 3
    cfg.evaluate.epochs = 7
    cfg.partial.rate = 0.5
    cfg.data.cache_dir = os.path.join(self.tmp, "elsewhere")
    for stages in (("generate",), ("generate", "release", "evaluate")):
      workdir_lib.verify(cfg, workdir, overwrite=False, stages=stages)
    workdir_lib.verify(cfg, workdir, overwrite=False)
    cfg.noise.num_steps = 7
    with self.assertRaisesRegex(UEError, r"made by a different config "
                                r"\(noise.num_steps: 3 there, 7 now\)"):
      workdir_lib.verify(cfg, workdir, overwrite=False)
    pretrained = tiny_config(self.train, self.test)
    pretrained.generate.pretrain_epochs = 1
    other = os.path.join(self.tmp, "pretrained")
    workdir_lib.claim(pretrained, other, overwrite=False)
    pretrained.evaluate.lr = 0.5
    with self.assertRaisesRegex(UEError, r"\(evaluate.lr: 0.1 there, 0.5 "
                                r"now\)"):
      workdir_lib.verify(pretrained, other, overwrite=False,
                         stages=("generate",))

  def test_a_record_older_than_a_field_reads_as_its_old_value(self):
    """A workdir recorded before model.compute_dtype and
    generate.model_order existed was made in float32 with the stored walk:
    it resumes under those values and is refused under another walk."""
    workdir = os.path.join(self.tmp, "old")
    cfg = tiny_config(self.train, self.test)
    cfg.generate.model_order = "stored"
    path = workdir_lib.claim(cfg, workdir, overwrite=False)
    record = read_json(path)
    del record["config"]["model"]["compute_dtype"]
    del record["config"]["generate"]["model_order"]
    with open(path, "w") as f:
      json.dump(record, f)
    workdir_lib.verify(cfg, workdir, overwrite=False)
    cfg.generate.model_order = "shuffled"
    with self.assertRaisesRegex(UEError, r"generate.model_order: 'stored' "
                                r"there, 'shuffled' now"):
      workdir_lib.verify(cfg, workdir, overwrite=False)
    cfg.generate.model_order = "stored"
    cfg.model.compute_dtype = "bfloat16"
    with self.assertRaisesRegex(UEError, r"model.compute_dtype: 'float32' "
                                r"there, 'bfloat16' now"):
      workdir_lib.verify(cfg, workdir, overwrite=False)

  def test_a_stage_record_older_than_a_field_reads_as_its_old_value(self):
    """A release recorded before noise.lsp_l2_eps existed was made with
    its old value (0): a battery reads it under 0, and not under 1."""
    workdir = os.path.join(self.tmp, "old_stage")
    cfg = tiny_config(self.train, self.test)
    stand_in_stage(cfg, workdir, "release")
    path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
    record = read_json(path)
    del record["config"]["noise"]["lsp_l2_eps"]
    del record["stages"]["release"]["noise"]["lsp_l2_eps"]
    with open(path, "w") as f:
      json.dump(record, f)
    workdir_lib.verify(cfg, workdir, overwrite=False, stages=("battery",))
    cfg.noise.lsp_l2_eps = 1.0
    with self.assertRaisesRegex(UEError, r"noise.lsp_l2_eps: 0.0 there, "
                                r"1.0 now"):
      workdir_lib.verify(cfg, workdir, overwrite=False, stages=("battery",))

  def test_stale_outputs_are_redone_or_refused(self):
    """A later stage's outputs made with other values of its fields are
    accepted when this run redoes that stage, refused when it would read
    them or leave them in place under the new config."""
    workdir = os.path.join(self.tmp, "w")
    old = tiny_config(self.train, self.test)
    for stage in ("release", "evaluate"):
      stand_in_stage(old, workdir, stage)
    cfg = tiny_config(self.train, self.test)
    cfg.partial.rate = 0.5
    cfg.data.cache_dir = os.path.join(self.tmp, "elsewhere")
    for stages in (("evaluate",), ("battery",), ("generate",)):
      with self.assertRaisesRegex(UEError, r"holds release outputs of a "
                                  r"different config \(partial.rate: 1.0 "
                                  r"there, 0.5 now\)"):
        workdir_lib.verify(cfg, workdir, overwrite=False, stages=stages)
    with self.assertRaisesRegex(UEError, "holds evaluate outputs"):
      workdir_lib.verify(cfg, workdir, overwrite=False, stages=("release",))
    workdir_lib.verify(cfg, workdir, overwrite=False,
                       stages=("release", "evaluate", "battery"))
    cfg = tiny_config(self.train, self.test)
    cfg.evaluate.epochs = 3
    for stages in (("release",), ("battery",)):
      with self.assertRaisesRegex(UEError, r"holds evaluate outputs of a "
                                  r"different config \(evaluate.epochs: 1 "
                                  r"there, 3 now\)"):
        workdir_lib.verify(cfg, workdir, overwrite=False, stages=stages)
    workdir_lib.verify(cfg, workdir, overwrite=False, stages=("evaluate",))
    # Once the evaluation is redone with it, the new value is the record.
    workdir_lib.claim(cfg, workdir, overwrite=False)
    workdir_lib.record_stage(cfg, workdir, "evaluate")
    workdir_lib.verify(cfg, workdir, overwrite=False, stages=("battery",))
    with self.assertRaisesRegex(UEError, "holds evaluate outputs"):
      workdir_lib.verify(old, workdir, overwrite=False, stages=("battery",))

  def test_first_difference(self):
    old = workdir_lib.canonical(tiny_config(self.train, self.test))
    new = workdir_lib.canonical(tiny_config(self.train, self.test, eps=0.1,
                                            num_steps=7))
    self.assertEqual(workdir_lib.first_difference(old, new),
                     f"noise.eps: {8 / 255!r} there, 0.1 now")
    self.assertIsNone(workdir_lib.first_difference(old, old))

  def test_overwrite_through_the_cli(self):
    """--overwrite on a workdir of another config: old outputs go, other
    files stay, and the new config is recorded."""
    fixtures = make_fixtures(self.tmp)
    used = fixtures["used"]
    with open(os.path.join(used, "notes.txt"), "w", encoding="utf-8") as f:
      f.write("mine\n")
    noise = os.path.join(self.tmp, "zeros.npy")
    np.save(noise, np.zeros((96, 12, 12, 1), np.float32))
    case = Case("overwrite", [f"--config.release.noise_path={noise}",
                              "--overwrite"], "", workdir="used")
    proc = run_case(case, fixtures)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    # (TensorBoard events too where tensorboardX is installed: main's default)
    self.assertCountEqual(os.listdir(used),
                          ["config.json", "notes.txt", "release", "figure.png",
                           "results.json", "results"]
                          + ["tensorboard"] * metrics_lib.board_available())
    cfg = tiny_config(fixtures["train"], fixtures["test"])
    cfg.release.noise_path = noise
    self.assertEqual(read_json(os.path.join(used, "config.json"))["sha256"],
                     workdir_lib.config_hash(workdir_lib.canonical(cfg)))


if __name__ == "__main__":
  absltest.main()
