"""What --overwrite may delete, and what results.json may hold.

--overwrite deletes only inside a ue_jax workdir (a config.json record that
workdir.claim wrote) or an empty one, and only what ue_jax writes there: a
folder of someone else's files given as --workdir is refused with one line
and left byte for byte as it was.

results.json is the union of the run's header and the stage files
DIR/results/<stage>.json: a rerun stage replaces its numbers whole, and a
redone stage drops those of the stages that read its outputs, so no key of
an earlier run survives that the rerun made stale.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
from absl.testing import absltest

from configs import protect as protect_config
from configs import test_tiny
from tests import helpers
from ue_jax import pipeline
from ue_jax import protect_folder
from ue_jax.evaluation import report
from ue_jax.io import workdir as workdir_lib
from ue_jax.runtime.errors import UEError

# A user's folder: notes, a file named like a checkpoint, their own results.
PLANTED = {os.path.join("release", "notes.txt"): b"release notes\n",
           os.path.join("checkpoints", "important.bin"): bytes(range(256)),
           "results.json": b'{"my": "own numbers"}\n'}


def tiny_config(train, test, **noise):
  cfg = test_tiny.get_config()
  cfg.data.train_path, cfg.data.test_path = train, test
  cfg.noise.update(noise)
  return cfg


def plant(folder, files):
  for name, data in files.items():
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


def tree(folder):
  """{relative path: sha256} of every file under `folder`, and the folders
  as None."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs:
      out[os.path.relpath(os.path.join(root, name), folder)] = None
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        out[os.path.relpath(os.path.join(root, name), folder)] = (
            hashlib.sha256(f.read()).hexdigest())
  return out


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


class OverwriteTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.train, self.test = helpers.write_npz(self.tmp)
    self.cfg = tiny_config(self.train, self.test)

  def assert_planted(self, folder, files=None):
    for name, data in (files or PLANTED).items():
      with open(os.path.join(folder, name), "rb") as f:
        self.assertEqual(f.read(), data, name)

  def test_a_folder_of_other_files_is_refused(self):
    """--overwrite on a user's folder: refused before anything is
    deleted or written, through pipeline.run and through claim itself."""
    mine = os.path.join(self.tmp, "mine")
    plant(mine, PLANTED)
    before = tree(mine)
    message = (r"is not a ue_jax workdir \(it holds checkpoints, release, "
               r"results.json but no ue_jax record config.json\); "
               r"--overwrite deletes outputs only in a ue_jax workdir")
    with self.assertRaisesRegex(UEError, message):
      pipeline.run(self.cfg, mine, overwrite=True)
    with self.assertRaisesRegex(UEError, message):
      workdir_lib.claim(self.cfg, mine, overwrite=True)
    self.assertEqual(tree(mine), before)
    self.assert_planted(mine)

  def test_a_config_json_that_is_no_record_is_refused(self):
    """A user's own config.json does not make a ue_jax workdir, with the
    flag or without it."""
    mine = os.path.join(self.tmp, "theirs")
    files = {**PLANTED, "config.json": b'{"config": "mine"}\n'}
    plant(mine, files)
    before = tree(mine)
    with self.assertRaisesRegex(UEError, "is not a ue_jax workdir"):
      workdir_lib.verify(self.cfg, mine, overwrite=True)
    with self.assertRaisesRegex(UEError, "is not a ue_jax config record"):
      workdir_lib.verify(self.cfg, mine, overwrite=False)
    with self.assertRaisesRegex(UEError, "is not a ue_jax workdir"):
      workdir_lib.claim(self.cfg, mine, overwrite=True)
    self.assertEqual(tree(mine), before)

  def test_an_empty_or_missing_folder_is_fine(self):
    for name in ("empty", "missing"):
      folder = os.path.join(self.tmp, name)
      if name == "empty":
        os.makedirs(folder)
      workdir_lib.verify(self.cfg, folder, overwrite=True)
      path = workdir_lib.claim(self.cfg, folder, overwrite=True)
      self.assertTrue(workdir_lib.is_record(read_json(path)))

  def test_overwrite_deletes_only_what_ue_jax_writes(self):
    """In a ue_jax workdir: every output (and ue_jax's entries of the
    output folders, temporaries included) goes; the user's files there,
    and the folders that hold them, stay."""
    work = os.path.join(self.tmp, "w")
    old = tiny_config(self.train, self.test, eps=16 / 255)
    workdir_lib.claim(old, work, overwrite=False)
    ours = {name: b"ue_jax\n" for name in (
        "noise.npy", "figure.png", "curves.png", "results.json",
        "metrics.jsonl", ".tmp-0123456789abcdef.json",
        os.path.join("checkpoints", "3", "state", "data"),
        os.path.join("checkpoints", "4.orbax-checkpoint-tmp-17", "x"),
        os.path.join("release", "unlearnable_train.npz"),
        os.path.join("release", ".tmp-00000000000000ff.npz"),
        os.path.join("battery", "battery.json"),
        os.path.join("battery", "battery.md"),
        os.path.join("battery", "cells", "0123456789abcdef.json"),
        os.path.join("battery", "clean", "fedcba9876543210.json"))}
    plant(work, ours)
    users = {"notes.txt": b"mine\n",
             os.path.join("release", "notes.txt"): b"release notes\n",
             os.path.join("checkpoints", "important.bin"): b"\x00\x01",
             os.path.join("battery", "cells", "by_hand.md"): b"mine\n"}
    plant(work, users)
    workdir_lib.verify(self.cfg, work, overwrite=True)
    workdir_lib.claim(self.cfg, work, overwrite=True)
    self.assert_planted(work, users)
    left = tree(work)
    self.assertEqual(
        sorted(left),
        sorted(["config.json", "release", "checkpoints", "battery",
                os.path.join("battery", "cells"), *users]))
    record = read_json(os.path.join(work, "config.json"))
    self.assertEqual(record["sha256"], workdir_lib.config_hash(
        workdir_lib.canonical(self.cfg)))
    self.assertNotIn("stages", record)

  def test_overwrite_of_a_real_workdir_runs_afresh(self):
    """A generate+release run, a user's file beside its outputs, then the
    same workdir under another eps with --overwrite: the new noise is
    searched (not resumed) and released; the user's file stays."""
    work = os.path.join(self.tmp, "real")
    old = tiny_config(self.train, self.test, eps=16 / 255)
    first = pipeline.run(old, work, ("generate", "release"))
    self.assertEqual(first["epsilon_255"], 16)
    plant(work, {"notes.txt": b"mine\n"})
    with self.assertRaisesRegex(UEError, "made by a different config"):
      pipeline.run(self.cfg, work, ("generate", "release"))
    second = pipeline.run(self.cfg, work, ("generate", "release"),
                          overwrite=True)
    self.assertEqual(second["epsilon_255"], 8)
    self.assertEqual(second["rounds"], 2)
    self.assertLessEqual(second["release_max_pixel_change"], 8)
    noise = np.load(os.path.join(work, "noise.npy"))
    self.assertLessEqual(float(np.abs(noise).max()), 8 / 255 + 1e-6)
    # Two rounds, searched afresh: two checkpoints, not four.
    self.assertEqual(sorted(os.listdir(os.path.join(work, "checkpoints"))),
                     ["1", "2"])
    self.assert_planted(work, {"notes.txt": b"mine\n"})
    self.assertEqual(read_json(os.path.join(work, "config.json"))["sha256"],
                     workdir_lib.config_hash(workdir_lib.canonical(self.cfg)))

  def test_the_command_line_refuses_with_one_line(self):
    mine = os.path.join(self.tmp, "cli")
    plant(mine, PLANTED)
    before = tree(mine)
    proc = subprocess.run(
        helpers.main_command(mine, f"--config.data.train_path={self.train}",
                             f"--config.data.test_path={self.test}",
                             "--overwrite"),
        cwd=helpers.REPO, capture_output=True, text=True, timeout=300,
        check=False)
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertNotIn("Traceback", proc.stderr)
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error")]
    self.assertLen(errors, 1)
    self.assertEqual(proc.stderr.strip().splitlines()[-1], errors[0])
    self.assertEqual(
        errors[0], f"error: --workdir {mine} is not a ue_jax workdir (it "
        "holds checkpoints, release, results.json but no ue_jax record "
        "config.json); --overwrite deletes outputs only in a ue_jax workdir, "
        "so nothing was deleted; give a new or empty --workdir")
    self.assertEqual(tree(mine), before)
    self.assert_planted(mine)


def stage_files(workdir):
  folder = os.path.join(workdir, workdir_lib.STAGE_RESULTS)
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


class ResultsTest(absltest.TestCase):
  """Reruns on a copy of one finished run: partial protection of class 1
  (so the evaluation trains on the clean remainder too), clean training
  on."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="ue_jax_results_")
    cls.train, cls.test = helpers.write_npz(cls.tmp)
    cls.reference = os.path.join(cls.tmp, "reference")
    cls.first = pipeline.run(cls.config(), cls.reference)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @classmethod
  def config(cls):
    cfg = tiny_config(cls.train, cls.test)
    cfg.partial.classes = (1,)
    return cfg

  def copy(self, name):
    workdir = os.path.join(self.tmp, name)
    shutil.copytree(self.reference, workdir)
    return workdir

  def results(self, workdir):
    return read_json(os.path.join(workdir, "results.json"))

  def test_the_first_run_has_every_stage(self):
    self.assertEqual(stage_files(self.reference),
                     ["evaluate.json", "generate.json", "release.json"])
    results = self.results(self.reference)
    self.assertEqual(results, json.loads(json.dumps(self.first)))
    for key in ("rounds", "release_path", "clean_test_accuracy",
                "clean_remainder_test_accuracy",
                "protected_classes_test_accuracy"):
      self.assertIn(key, results)
    self.assertEqual(results["protected_count"], 24)  # class 1 of 96
    # The union: each stage file's keys, the header's, nothing else.
    union = dict(results)
    for name in stage_files(self.reference):
      stage = read_json(os.path.join(self.reference, "results", name))
      for key, value in stage.items():
        self.assertEqual(union.pop(key), value, key)
    self.assertEqual(union["config_name"], "test_tiny")
    self.assertNotIn("curves", union)

  def test_evaluate_without_clean_training_drops_the_clean_numbers(self):
    workdir = self.copy("no_clean")
    cfg = self.config()
    cfg.evaluate.train_clean = False
    out = pipeline.run(cfg, workdir, ("evaluate",))
    results = self.results(workdir)
    self.assertEqual(results, json.loads(json.dumps(out)))
    for where in (results, results["curves"], results["confusion"],
                  results["per_class_test_accuracy"],
                  results["protected_classes_test_accuracy"]):
      self.assertNotIn("clean", where)
      self.assertNotIn("clean_test_accuracy", where)
    self.assertIn("unlearnable_test_accuracy", results)
    self.assertIn("clean_remainder_test_accuracy", results)
    # The other stages' numbers are this workdir's still.
    self.assertEqual(results["rounds"], self.first["rounds"])
    self.assertEqual(results["protected_count"], 24)
    row = report.load_row(workdir)
    self.assertIsNone(row["clean"])
    self.assertEqual(row["unlearnable"], results["unlearnable_test_accuracy"])

  def test_partial_edits_drop_the_partial_numbers(self):
    workdir = self.copy("partial_edit")
    cfg = tiny_config(self.train, self.test)  # everything protected
    with self.assertRaisesRegex(UEError, "holds release outputs of a "
                                "different config"):
      pipeline.run(cfg, workdir, ("evaluate",))
    pipeline.run(cfg, workdir, ("release", "evaluate"))
    results = self.results(workdir)
    for key in ("clean_remainder_test_accuracy",
                "protected_classes_test_accuracy",
                "other_classes_test_accuracy"):
      self.assertNotIn(key, results)
    self.assertNotIn("clean_remainder", results["curves"])
    self.assertEqual((results["poison_rate"], results["protected_count"]),
                     (1.0, 96))
    self.assertEqual(results["protection"]["classes"], [])
    self.assertEqual(report.load_row(workdir)["remainder"], None)

  def test_a_redone_stage_drops_the_stages_that_read_it(self):
    workdir = self.copy("redone")
    release_keys = set(read_json(os.path.join(workdir, "results",
                                              "release.json")))
    pipeline.run(self.config(), workdir, ("release",))
    self.assertEqual(stage_files(workdir), ["generate.json", "release.json"])
    results = self.results(workdir)
    self.assertNotIn("clean_test_accuracy", results)
    self.assertNotIn("curves", results)
    self.assertTrue(release_keys <= set(results))
    pipeline.run(self.config(), workdir, ("generate",))  # resumes: 0 steps
    self.assertEqual(stage_files(workdir), ["generate.json"])
    results = self.results(workdir)
    self.assertFalse(release_keys & set(results))
    self.assertEqual(results["rounds"], self.first["rounds"])

  def test_dependents(self):
    self.assertEqual(workdir_lib.dependents("generate"),
                     ("release", "evaluate", "battery"))
    self.assertEqual(workdir_lib.dependents("release"),
                     ("evaluate", "battery"))
    self.assertEqual(workdir_lib.dependents("evaluate"), ())
    self.assertEqual(workdir_lib.dependents("battery"), ())

  def test_a_results_json_from_before_the_stage_files_is_set_aside(self):
    """Its keys cannot be told apart by stage: kept in results/, never
    merged into the new results.json."""
    workdir = os.path.join(self.tmp, "older")
    os.makedirs(workdir)
    old = {"config_name": "old", "clean_test_accuracy": 0.9}
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(old, f)
    results = workdir_lib.Results(workdir, {"config_name": "new"})
    self.assertEqual(results.start("evaluate"), {"config_name": "new"})
    self.assertEqual(read_json(os.path.join(workdir, "results",
                                            "before_stage_files.json")), old)
    self.assertEqual(results.record("evaluate", {"unlearnable": 0.3}),
                     {"config_name": "new", "unlearnable": 0.3})
    self.assertEqual(self.results(workdir),
                     {"config_name": "new", "unlearnable": 0.3})


def tiny_protect_config(preview):
  cfg = protect_config.get_config()
  cfg.model.name, cfg.model.width = "small_cnn_avg", 4
  cfg.noise.num_steps = 2
  cfg.generate.max_rounds, cfg.generate.train_steps = 1, 2
  cfg.protect.size, cfg.protect.preview = 8, preview
  return cfg


class ProtectPreviewTest(absltest.TestCase):
  """protect.preview is the figure's row count: editing it on a protect
  workdir redraws the figure, keeps the search, and rewrites no copy."""

  def test_the_search_identity_leaves_the_preview_out(self):
    work = os.path.join(self.create_tempdir().full_path, "w")
    workdir_lib.claim(tiny_protect_config(2), work, overwrite=False)
    for preview in (0, 2, 5):
      workdir_lib.verify(tiny_protect_config(preview), work, overwrite=False)
    other = tiny_protect_config(2)
    other.protect.size = 16
    with self.assertRaisesRegex(UEError, r"protect.size: 8 there, 16 now"):
      workdir_lib.verify(other, work, overwrite=False)

  def test_a_rerun_with_another_preview_redraws_only_the_figure(self):
    tmp = self.create_tempdir().full_path
    src, out = os.path.join(tmp, "in"), os.path.join(tmp, "out")
    helpers.write_image_tree(src, classes=("cat", "dog", "emu"),
                             per_class=6, splits=("",))
    first = protect_folder.run(tiny_protect_config(2), src, out)
    work = protect_folder.default_workdir(out)
    kept = {name: os.stat(os.path.join(work, name)).st_mtime_ns
            for name in ("noise.npy", "checkpoints")}
    def copies():
      return {k: v for k, v in tree(out).items()
              if not k.startswith(protect_folder.WORKDIR_NAME)}
    before = copies()
    self.assertLen([v for v in before.values() if v], 18)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(first["preview_path"]) as figure:
      height = figure.size[1]
    second = protect_folder.run(tiny_protect_config(3), src, out)
    self.assertEqual((second["written"], second["skipped_verified"]),
                     (0, 18))
    for name, mtime in kept.items():  # no new search, no new checkpoint
      self.assertEqual(os.stat(os.path.join(work, name)).st_mtime_ns, mtime)
    with Image.open(second["preview_path"]) as figure:
      self.assertGreater(figure.size[1], height)  # 3 rows, not 2
    self.assertEqual(read_json(os.path.join(work, "config.json"))["config"]
                     ["protect"]["preview"], 3)
    third = protect_folder.run(tiny_protect_config(0), src, out)
    self.assertNotIn("preview_path", third)
    self.assertFalse(os.path.exists(os.path.join(work, "preview.png")))
    self.assertEqual(copies(), before)  # the protected files' bytes


if __name__ == "__main__":
  absltest.main()
