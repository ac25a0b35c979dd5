"""Host loops around the jitted steps: accuracy sweeps and supervised training.

Batches always have one shape (padding rows carry mask 0), so every jitted step
compiles once. A dataset is a host `data.Dataset` or a `device_data.DeviceData`
(images on the mesh); either gives its batches by row numbers (`batch`).
`recipe_fit` is the one supervised training of the package: the evaluation's
models and the error-max generator's pretraining.
"""

import functools

import numpy as np

from ue_jax.core import optim
from ue_jax.core import steps as steps_lib
from ue_jax.io import data as data_lib
from ue_jax.io import metrics as metrics_lib
from ue_jax.parallel import sharding
from ue_jax.runtime.errors import UEError


def sweep_sums(eval_fn, state, ds: data_lib.Dataset, batch_size: int):
  """The outputs of `eval_fn` summed over a dataset, as numpy."""
  sums = None
  for rows in data_lib.batches(len(ds), batch_size):
    out = eval_fn(state, ds.batch(rows))
    sums = out if sums is None else {k: sums[k] + out[k] for k in sums}
  return {k: np.asarray(v) for k, v in sums.items()}


def rates(sums):
  """(accuracy, mean loss) from a sweep's sums."""
  count = float(sums["count"])
  return float(sums["correct"]) / count, float(sums["loss"]) / count


def sweep(eval_fn, state, ds: data_lib.Dataset, batch_size: int):
  """(accuracy, mean loss) of `eval_fn` over a dataset."""
  return rates(sweep_sums(eval_fn, state, ds, batch_size))


def confusion(sums) -> list:
  """The summed confusion matrix of a sweep as lists of ints."""
  return np.rint(sums["confusion"]).astype(int).tolist()


def cycle_batches(n: int, batch_size: int, *, start: int = 0, order=None):
  """Endless full batches of a walk over 0..n-1 that wraps across epoch
  ends: batch s holds positions (s * batch_size + arange(batch_size)) mod n
  of `order` (a permutation of 0..n-1; None = rows in order). Starting at
  batch `start` lets a resumed run continue from its step count.
  """
  step = start
  while True:
    rows = (step * batch_size + np.arange(batch_size, dtype=np.int64)) % n
    yield (rows if order is None else order[rows]).astype(np.int32)
    step += 1


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int):
  """One shuffled epoch of full batches (drop_last, as the original)."""
  order = np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)
  for start in range(0, n - batch_size + 1, batch_size):
    yield order[start:start + batch_size]


def fit(state, train_step, eval_fn, train: data_lib.Dataset,
        test: data_lib.Dataset, *, epochs: int, batch_size: int,
        eval_batch_size: int, seed: int, label: str, log=None,
        after_epoch=None, votes=None, snapshot=None):
  """Trains for `epochs`, returning (state, per-epoch records); the last
  record also holds the test set's confusion matrix (rows: true class).
  `snapshot(epoch, state)`, when given, sees the state at the end of each
  epoch (it must copy what it keeps: the next step donates the state).
  `after_epoch(epoch, record, agreed)` is called after each epoch; with
  `votes(size)` (this process's votes, sharding.VOTES) in every batch,
  `agreed` is the last step's agreed votes (sharding.agree), else None.
  The metrics stay on the devices, summed there, and are read once an
  epoch: the host does not wait for the steps in between."""
  steps = len(train) // batch_size
  progress = metrics_lib.Progress(label, epochs * steps * batch_size, "img")
  history = []
  for epoch in range(epochs):
    loss_sum, hits, m = 0.0, 0.0, {}
    for rows in epoch_batches(len(train), batch_size, seed=seed, epoch=epoch):
      batch = train.batch(rows)
      if votes is not None:
        batch[sharding.VOTES] = votes(batch_size)
      state, m = train_step(state, batch)
      loss_sum, hits = loss_sum + m["loss"], hits + m["accuracy"]
      progress.update(batch_size, m)
    sums = sweep_sums(eval_fn, state, test, eval_batch_size)
    test_acc, test_loss = rates(sums)
    record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / steps,
              "train_accuracy": float(hits) / steps,
              "test_accuracy": test_acc, "test_loss": test_loss}
    if not np.isfinite(record["train_loss"]):
      raise UEError(f"{label}: non-finite training loss at epoch {epoch + 1}; "
                    "lower the learning rate")
    history.append(record)
    if log is not None:
      log.write(label, **record)
    if snapshot is not None:
      snapshot(epoch + 1, state)
    if after_epoch is not None:
      agreed = m.get(sharding.VOTES)
      after_epoch(epoch + 1, record,
                  None if agreed is None else np.asarray(agreed))
  history[-1]["confusion"] = confusion(sums)  # of the last epoch, on `test`
  return state, history


def recipe_fit(e, placement, init, train, test, *, epochs: int, seed: int,
               label: str, inputs=(), log=None, after_epoch=None,
               votes=None, step=None, snapshot=None):
  """Trains the state `init(tx, *inputs)` (pure; `tx` the recipe's
  optimizer) on `train` with the training recipe of block `e`
  (cfg.evaluate: batch sizes, SGD with a per-epoch cosine over `epochs`,
  augmentation), scoring `test` after every epoch (`fit`); the state is
  born over the mesh of `placement` (sharding.Placement), where `train` and
  `test` are. `step` (a pure `fn(state, batch) -> (state, metrics)`, e.g. a
  defense's) replaces the recipe's model step; `snapshot` goes to `fit`.
  Returns (state, history, the jitted eval step)."""
  steps_per_epoch = len(train) // e.batch_size
  if steps_per_epoch < 1:
    raise UEError(f"evaluate.batch_size={e.batch_size} exceeds the "
                  f"{len(train)} training images")
  for field in ("batch_size", "eval_batch_size"):
    placement.check_batch_size(f"evaluate.{field}", e[field])
  tx = optim.recipe(e.lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                    momentum=e.momentum, weight_decay=e.weight_decay,
                    grad_clip=e.grad_clip)
  state, shardings = placement.create(functools.partial(init, tx), *inputs)
  train_step = placement.jit_step(
      step or functools.partial(steps_lib.model_step, augment=e.augment),
      shardings, full_batches=True)
  eval_fn = placement.jit_step(steps_lib.eval_step, shardings,
                               returns_state=False)
  state, history = fit(
      state, train_step, eval_fn, train, test, epochs=epochs,
      batch_size=e.batch_size, eval_batch_size=e.eval_batch_size, seed=seed,
      label=label, log=log, after_epoch=after_epoch, votes=votes,
      snapshot=snapshot)
  return state, history, eval_fn
