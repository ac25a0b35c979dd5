"""--tensorboard: the metric log's scalars as TensorBoard events, read back
from the event files (TFRecord framing, tensorboardX's Event proto)."""

import glob
import os
import struct
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

from configs import test_tiny
from tests import helpers
from ue_jax import pipeline
from ue_jax.runtime.errors import UEError
from ue_jax.io import metrics
from ue_jax.io import workdir as workdir_lib

try:
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
except ImportError:
  event_pb2 = None


def read_scalars(logdir):
  """{tag: [(step, value)]} of every scalar in the event files."""
  found = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      payload = data[at + 12:at + 12 + length]
      at += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        found.setdefault(value.tag, []).append(
            (event.step, round(value.simple_value, 5)))
  return found


@absltest.skipIf(event_pb2 is None, "tensorboardX is not installed")
class TensorBoardTest(absltest.TestCase):

  def test_scalars_tags_and_steps(self):
    tmp = tempfile.mkdtemp()
    log = metrics.MetricLog(tmp, tensorboard=True)
    log.write("generate", round=1, train_accuracy=0.25, train_loss=2.0)
    log.write("generate", round=2, train_accuracy=0.75, train_loss=0.5)
    log.write("evaluate_clean", epoch=3, test_accuracy=0.5, name="x",
              confusion=[[1, 0], [0, 1]], done=True)
    log.write("pretrain", seconds=1.5)
    log.write("pretrain", seconds=2.5)
    got = read_scalars(os.path.join(tmp, metrics.TENSORBOARD_DIR))
    self.assertEqual(got["generate/train_accuracy"], [(1, 0.25), (2, 0.75)])
    self.assertEqual(got["generate/train_loss"], [(1, 2.0), (2, 0.5)])
    self.assertEqual(got["evaluate_clean/test_accuracy"], [(3, 0.5)])
    # a record without round/epoch/step counts its stage's records
    self.assertEqual(got["pretrain/seconds"], [(1, 1.5), (2, 2.5)])
    # strings, lists and booleans stay in metrics.jsonl only
    self.assertNotIn("evaluate_clean/name", got)
    self.assertNotIn("evaluate_clean/confusion", got)
    self.assertNotIn("evaluate_clean/done", got)
    self.assertNotIn("generate/round", got)

  def test_off_by_default(self):
    tmp = tempfile.mkdtemp()
    metrics.MetricLog(tmp).write("generate", round=1, train_accuracy=0.5)
    self.assertFalse(os.path.exists(os.path.join(tmp,
                                                 metrics.TENSORBOARD_DIR)))

  def test_main_writes_them_by_default_and_notensorboard_stops_it(self):
    tmp = tempfile.mkdtemp()
    train, test = helpers.write_npz(tmp)
    data = [f"--config.data.train_path={train}",
            f"--config.data.test_path={test}"]
    work = os.path.join(tmp, "w")
    proc = helpers.run_main(work, *data, stage="generate")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    rounds = [r for r in metrics.read_log(os.path.join(work, "metrics.jsonl"),
                                          "generate")]
    got = read_scalars(os.path.join(work, metrics.TENSORBOARD_DIR))
    self.assertEqual(
        got["generate/train_accuracy"],
        [(r["round"], round(r["train_accuracy"], 5)) for r in rounds])
    self.assertIn(metrics.TENSORBOARD_DIR, workdir_lib.OUTPUTS)
    proc = helpers.run_main(work, "--overwrite", "--notensorboard", *data,
                            stage="generate")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(glob.glob(os.path.join(work, metrics.TENSORBOARD_DIR,
                                            "events.*")), [])

  def test_insisting_without_the_package_writes_nothing(self):
    tmp = tempfile.mkdtemp()
    with mock.patch.dict(sys.modules, {"tensorboardX": None,
                                       "tensorboardX.proto": None}):
      self.assertFalse(metrics.board_available())
      with self.assertRaisesRegex(UEError, "pip install tensorboardX"):
        pipeline.run(test_tiny.get_config(), os.path.join(tmp, "w"),
                     tensorboard=True)
    self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
  absltest.main()
