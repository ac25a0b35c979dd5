"""Validation of configs and data before any compute; one clear line each."""

from ue_jax import augment
from ue_jax.errors import UEError
from ue_jax.models import MODELS


def fail(message: str):
  raise UEError(message)


def _range(name, value, lo, hi, *, lo_open=False, integer=False):
  if integer and (isinstance(value, bool) or not isinstance(value, int)):
    fail(f"{name} must be an integer, got {value!r}")
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    fail(f"{name} must be a number, got {value!r}")
  too_low = value <= lo if lo_open else value < lo
  if too_low or value > hi:
    fail(f"{name} must lie in {'(' if lo_open else '['}{lo}, {hi}], "
         f"got {value!r}")


def check_config(cfg):
  n, g, e = cfg.noise, cfg.generate, cfg.evaluate
  for field, name in (("model.name", cfg.model.name),
                      ("evaluate.model", e.model or cfg.model.name)):
    if name not in MODELS:
      fail(f"unknown model {name!r} ({field}); choose one of {sorted(MODELS)}")
  _range("noise.eps", n.eps, 0, 1, lo_open=True)
  _range("noise.step_size", n.step_size, 0, 1, lo_open=True)
  _range("noise.num_steps", n.num_steps, 1, 10_000, integer=True)
  if n.init not in ("zeros", "uniform"):
    fail(f"noise.init must be 'zeros' or 'uniform', got {n.init!r}")
  _range("model.width", cfg.model.width, 1, 4096, integer=True)
  for prefix, block in (("generate", g), ("evaluate", e)):
    _range(f"{prefix}.batch_size", block.batch_size, 1, 1 << 20, integer=True)
    _range(f"{prefix}.eval_batch_size", block.eval_batch_size, 1, 1 << 20,
           integer=True)
    _range(f"{prefix}.lr", block.lr, 0, 100, lo_open=True)
    _range(f"{prefix}.momentum", block.momentum, 0, 1)
    _range(f"{prefix}.weight_decay", block.weight_decay, 0, 1)
    _range(f"{prefix}.grad_clip", block.grad_clip, 0, 1e6)
  _range("generate.train_steps", g.train_steps, 0, 1_000_000, integer=True)
  _range("generate.max_rounds", g.max_rounds, 1, 100_000, integer=True)
  _range("generate.min_rounds", g.min_rounds, 1, g.max_rounds, integer=True)
  _range("generate.stop_accuracy", g.stop_accuracy, 0, 1)
  _range("evaluate.epochs", e.epochs, 1, 10_000, integer=True)
  if e.augment not in augment.KINDS:
    fail(f"evaluate.augment must be one of {augment.KINDS}, got "
         f"{e.augment!r}")
  _range("data.train_size", cfg.data.train_size, 0, 1 << 40, integer=True)
  _range("data.test_size", cfg.data.test_size, 0, 1 << 40, integer=True)


def check_data(cfg, train, test):
  if train.images.shape[1:] != test.images.shape[1:]:
    fail(f"train images {train.images.shape[1:]} and test images "
         f"{test.images.shape[1:]} differ in shape")
  if len(train) < cfg.evaluate.batch_size:
    fail(f"evaluate.batch_size={cfg.evaluate.batch_size} exceeds the "
         f"{len(train)} training images")
  if cfg.data.train_size and cfg.data.train_size < train.num_classes:
    fail(f"data.train_size={cfg.data.train_size} is smaller than the "
         f"{train.num_classes} classes")
