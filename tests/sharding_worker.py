"""Rounds of generation on tiny synthetic data, run in a process whose device
count is set here (JAX fixes it at start-up), for tests/sharding_test.py.

  python -m tests.sharding_worker --devices=8 --out=OUT.npz [--n=96 ...]
      [--layouts=samplewise,classwise]

Writes (process 0) an .npz with the exported noise, the params and batch
stats (flattened), the stop-test accuracy and loss, the rows each device
holds of the noise and of the training images, the rows of the images this
process supplied, the collectives of the stop test's step (which gathers its
images and noise), and how many times each jitted step compiled.
"""

import argparse
import os
import sys


def one_round(*, n: int = 96, rounds: int = 1, storage: str = "float32",
              data_axis: int = 0, init: str = "uniform",
              layout: str = "samplewise", count_compiles: bool = False,
              model_order: str = ""):
  """Runs `rounds` min-min rounds (M model steps, a noise sweep of the
  layout's fit set, the stop test on it) of configs/test_tiny.py on
  `helpers.synthetic(n)` with generate.build, the images on the mesh
  (device_data.py), as generate.run does; returns a dict of numpy results."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import test_tiny  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import device_data  # pylint: disable=g-import-not-at-top
  from ue_jax.search import generate  # pylint: disable=g-import-not-at-top
  from ue_jax.training import layouts  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from ue_jax.training import train as train_lib  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top

  compiles = _count_compiles() if count_compiles else {}
  cfg = test_tiny.get_config()
  cfg.noise.storage = storage
  cfg.noise.init = init  # uniform: the padding rows must not matter
  cfg.noise.layout = layout
  cfg.mesh.data = data_axis
  cfg.generate.model_order = model_order or cfg.generate.model_order
  placement = sharding.Placement(sharding.make_mesh(cfg.mesh.data))
  train = device_data.place(helpers.synthetic(n=n), placement)
  g = cfg.generate
  fit = layouts.fit_set(layout, train, fraction=g.classwise_subset,
                        seed=cfg.seed + 2)
  state, fns = generate.build(cfg, train, placement)
  model_step, noise_step, eval_step = fns
  model_rows = train_lib.cycle_batches(n, g.batch_size,
                                       order=generate.model_walk(cfg, train))
  for r in range(rounds):
    for _ in range(g.train_steps):
      state, _ = model_step(state, train.batch(next(model_rows)))
    for rows in layouts.noise_batches(layout, len(fit), g.batch_size,
                                      seed=cfg.seed, round_=r + 1):
      state, _ = noise_step(state, fit.batch(rows))
  acc, loss = train_lib.sweep(eval_step, state, fit, g.eval_batch_size)
  noise = np.concatenate([rows for _, rows in placement.host_chunks(
      state.noise, layouts.noise_shape(layout, train)[0],
      transform=generate.codec(cfg).decode, chunk=40)])
  leaves = jax.tree.leaves((state.params, state.batch_stats))
  return {
      "noise": noise, "accuracy": acc, "loss": loss,
      "params": np.concatenate([np.asarray(x).ravel() for x in leaves]),
      "shard_rows": np.array([s.data.shape[0] for s in
                              state.noise.addressable_shards]),
      "noise_rows": state.noise.shape[0],
      "image_shard_rows": np.array([s.data.shape[0] for s in
                                    train.images.addressable_shards]),
      "image_block": train.block[1] - train.block[0],
      "eval_collectives": _collectives(eval_step.lower(
          state, train.batch(np.arange(g.batch_size)))),
      "devices": jax.device_count(), "processes": jax.process_count(),
      # XLA compilations of each step over all rounds (the dispatch cache
      # may hold two entries that share one executable: the state made by
      # `Placement.create` and a step's output differ in their buffer
      # layouts).
      "compiles": np.array([compiles.get(name, -1) for name in
                            ("model_step", "noise_step", "eval_step")]),
  }


def _collectives(lowered):
  """'op type' of every collective in a lowered program's compiled HLO."""
  import re  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  found = re.findall(r"= (\w+\[[\d,]*\])\S* (all-gather|all-reduce|"
                     r"reduce-scatter|all-to-all|collective-permute)\(",
                     lowered.compile().as_text())
  return np.array([f"{op} {kind}" for kind, op in found] or [""])


def _count_compiles():
  """Counts 'Finished XLA compilation of jit(NAME)' per NAME from now on."""
  import collections  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  counts = collections.Counter()

  class Handler(logging.Handler):
    def emit(self, record):
      found = re.search(r"XLA compilation of jit\((\w+)\)",
                        record.getMessage())
      if found:
        counts[found.group(1)] += 1

  jax.config.update("jax_log_compiles", True)
  logging.getLogger("jax._src.dispatch").addHandler(Handler())
  return counts


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--out", required=True)
  p.add_argument("--n", default="96", help="comma-separated sizes")
  p.add_argument("--rounds", type=int, default=1)
  p.add_argument("--storage", default="float32")
  p.add_argument("--layouts", default="samplewise",
                 help="comma-separated: samplewise,classwise")
  p.add_argument("--port", type=int, default=0)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  a = p.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", a.devices)
  if a.num_processes > 1:
    from ue_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize_distributed(
        coordinator_address=f"127.0.0.1:{a.port}",
        num_processes=a.num_processes, process_id=a.process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = {}
  for layout in a.layouts.split(","):
    for n in a.n.split(","):
      result = one_round(n=int(n), rounds=a.rounds, storage=a.storage,
                         layout=layout, count_compiles=True)
      out.update({f"{layout}/{n}/{k}": v for k, v in result.items()})
  if jax.process_index() == 0:
    np.savez(a.out, **out)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  main()
