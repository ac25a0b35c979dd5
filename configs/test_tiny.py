"""A tiny config for tests and smoke runs: small CNN, 2 rounds, 1 epoch.

Data comes from .npz files given by --config.data.train_path/test_path.
"""

from configs import common


def get_config():
  c = common.base()
  c.name = "test_tiny"
  c.data.name = "synthetic"
  c.data.source = "npz"
  c.model.name = "small_cnn_avg"
  c.model.width = 4
  c.noise.num_steps = 3
  c.generate.batch_size = 32
  c.generate.eval_batch_size = 32
  c.generate.train_steps = 2
  c.generate.max_rounds = 2
  c.evaluate.epochs = 1
  c.evaluate.batch_size = 16
  c.evaluate.eval_batch_size = 32
  c.evaluate.augment = "none"
  return c
