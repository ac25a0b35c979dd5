"""The host training loop: its metrics, and that it does not wait for the
devices after every step."""

import numpy as np
from absl.testing import absltest
from unittest import mock

from configs import test_tiny
from ue_jax.training import train as train_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.models import get_model
from ue_jax.core.state import create_state
from ue_jax.parallel import device_data
from ue_jax.parallel import sharding
from tests import helpers


class FitTest(absltest.TestCase):

  def test_waits_for_the_devices_only_to_log(self):
    """8 steps in 2 epochs: the host waits for the devices for progress
    only to write a line (at the end, or every 10 s), not after each step;
    the last line and the per-epoch records count every step."""
    e = test_tiny.get_config().evaluate  # batch 16
    placement = sharding.Placement(sharding.make_mesh(1))
    train = device_data.place(helpers.synthetic(n=64), placement)
    test = device_data.place(helpers.synthetic(n=32, seed=1), placement)
    model = get_model("small_cnn_avg", num_classes=4, width=4)

    def init(tx):
      return create_state(model, tx, seed=0, image_shape=train.image_shape)

    fake, calls = helpers.counting_jax()
    with mock.patch.object(metrics_lib, "jax", fake), \
        self.assertLogs(level="INFO") as logs:
      _, history, _ = train_lib.recipe_fit(
          e, placement, init, train, test, epochs=2, seed=0, label="fit")
    lines = [r for r in logs.output if "fit: " in r and " img, " in r]
    self.assertLen(calls, len(lines))
    self.assertIn("fit: 128/128 img", lines[-1])
    self.assertEqual([r["epoch"] for r in history], [1, 2])
    for r in history:
      self.assertTrue(np.isfinite(r["train_loss"]))
      # accuracy: a mean of 4 batch accuracies in steps of 1/16
      self.assertAlmostEqual(r["train_accuracy"] * 64,
                             round(r["train_accuracy"] * 64), places=4)


if __name__ == "__main__":
  absltest.main()
