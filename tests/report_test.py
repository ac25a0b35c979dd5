"""The report: table rows and charts from fake results.json files."""

import json
import os
import subprocess
import sys

from absl.testing import absltest

from ue_jax.evaluation import report
from tests import helpers


def fake_run(folder, name, **results):
  os.makedirs(os.path.join(folder, name))
  results.setdefault("num_classes", 10)
  with open(os.path.join(folder, name, "results.json"), "w") as f:
    json.dump(results, f)
  return os.path.join(folder, name)


class ReportTest(absltest.TestCase):

  def test_two_runs_table_and_chart(self):
    tmp = self.create_tempdir().full_path
    runs = [fake_run(tmp, "fm_samplewise", noise_kind="error_min",
                     noise_layout="samplewise", poison_rate=1.0,
                     clean_test_accuracy=0.868,
                     unlearnable_test_accuracy=0.25),
            fake_run(tmp, "fm_random", noise_kind="random",
                     noise_layout="classwise", poison_rate=1.0,
                     clean_test_accuracy=0.87,
                     unlearnable_test_accuracy=0.861)]
    out = os.path.join(tmp, "report", "table")
    written = report.write(runs, out)
    with open(out + ".md") as f:
      text = f.read()
    self.assertIn("| fm_samplewise | error-minimizing | samplewise | 1.00 | "
                  "0.868 | 0.250 | — |", text)
    self.assertIn("| fm_random | random | classwise | 1.00 | 0.870 | 0.861 | "
                  "— |", text)
    with open(out + ".png", "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    self.assertNotIn("partial_chart", written)  # a single poison rate

  def test_partial_curve(self):
    tmp = self.create_tempdir().full_path
    runs = [fake_run(tmp, f"p{rate}", noise_kind="error_min",
                     noise_layout="samplewise", poison_rate=rate,
                     unlearnable_test_accuracy=0.85 - 0.5 * rate,
                     clean_remainder_test_accuracy=(
                         None if rate == 1.0 else 0.85 - 0.05 * rate))
            for rate in (0.0, 0.4, 1.0)]
    written = report.write(runs, os.path.join(tmp, "fm"))
    self.assertTrue(os.path.exists(written["partial_chart"]))
    with open(written["table"]) as f:
      text = f.read()
    self.assertIn("| 0.40 | 0.650 | 0.830 | p0.4 |", text)
    self.assertIn("| 1.00 | 0.350 | — | p1.0 |", text)

  def test_per_class_and_group_accuracy(self):
    tmp = self.create_tempdir().full_path
    # 3 classes, groups {0, 1} and {2}; rows are true classes.
    confusion = [[6, 3, 1], [2, 8, 0], [0, 5, 5]]
    run = fake_run(tmp, "cm", unlearnable_test_accuracy=19 / 30,
                   num_classes=3, confusion={"unlearnable": confusion})
    written = report.write([run], os.path.join(tmp, "r"),
                           class_groups=[0, 0, 1])
    with open(written["table"]) as f:
      text = f.read()
    # per class 6/10, 8/10, 5/10; all 19/30; in-group (6+3+2+8+5)/30
    self.assertIn("| cm | unlearnable | 0.600 | 0.800 | 0.500 | 0.633 | "
                  "0.800 |", text)
    self.assertAlmostEqual(report.group_accuracy(confusion, [0, 1, 2]),
                           19 / 30)
    with self.assertRaisesRegex(Exception, "names 2 classes"):
      report.write([run], os.path.join(tmp, "r2"), class_groups=[0, 1])

  def test_per_class_columns_named_by_class_names(self):
    tmp = self.create_tempdir().full_path
    confusion = [[3, 1], [0, 4]]
    named = fake_run(tmp, "named", num_classes=2,
                     class_names=["bee", "owl|bat"],
                     confusion={"clean": confusion})
    old = fake_run(tmp, "old", num_classes=2, confusion={"clean": confusion})
    for run, head in ((named, "| run | trained on | bee | owl\\|bat | all |"),
                      (old, "| run | trained on | 0 | 1 | all |")):
      written = report.write([run], os.path.join(run, "r"))
      with open(written["table"]) as f:
        lines = f.read().splitlines()
      at = lines.index(head)  # the header, then the row: 3/4, 4/4, 7/8
      self.assertEqual(lines[at + 2], f"| {os.path.basename(run)} | clean | "
                       "0.750 | 1.000 | 0.875 |")

  def test_memory_plan_tool(self):
    proc = subprocess.run(
        [sys.executable, "tools/memory_plan.py", "--n=1000", "--shape=8,8,3",
         "--model=small_cnn", "--width=4", "--batch=64", "--devices=1,4",
         "--storage=float32,int8"], cwd=helpers.REPO, capture_output=True,
        text=True, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    rows = [l for l in proc.stdout.splitlines() if l.startswith("| 1000x8x8x3")]
    self.assertLen(rows, 4)  # 2 device counts x 2 storages
    # noise per device: 1000 rows x 192 values x 4 bytes on 1 device; int8
    # a quarter of it; on 4 devices each holds 250 rows.
    noise = [r.split("|")[5].strip() for r in rows]
    self.assertEqual(noise, ["750.00 KiB", "187.50 KiB", "187.50 KiB",
                             "46.88 KiB"])

  def test_cli_and_bad_input(self):
    tmp = self.create_tempdir().full_path
    run = fake_run(tmp, "a", unlearnable_test_accuracy=0.3,
                   clean_test_accuracy=0.9)
    cmd = [sys.executable, "tools/report.py", run, f"--out={tmp}/r"]
    proc = subprocess.run(cmd, cwd=helpers.REPO, capture_output=True,
                          text=True, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertTrue(os.path.exists(f"{tmp}/r.md"))
    proc = subprocess.run(cmd + [os.path.join(tmp, "missing")],
                          cwd=helpers.REPO, capture_output=True, text=True,
                          check=False)
    self.assertEqual(proc.returncode, 2)
    self.assertRegex(proc.stderr.strip().splitlines()[-1],
                     r"^error: no results.json at .*missing")
    proc = subprocess.run(cmd + ["--class_groups=0,x"], cwd=helpers.REPO,
                          capture_output=True, text=True, check=False)
    self.assertEqual(proc.returncode, 2)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "error: --class_groups=0,x: give one integer group per "
                     "class, comma-separated")


if __name__ == "__main__":
  absltest.main()
