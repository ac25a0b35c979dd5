"""The collectives of every step program of the pipeline, and how many
pairs of them may run in either order (the cause of XLA:CPU's
"Termination timeout for all reduce" aborts; ue_jax.parallel.collectives).

Compiles every step (the generator's for each noise kind and option, the
learner's for each augmentation, every battery defense's) of the tiny test
config over `--devices` CPU devices and prints, per program, its collectives
and how many pairs of them are unordered. On one device, the CPU default,
every program has none (tests/collectives_test.py).

  python benchmarks/collective_order.py --devices=1 --out=runs/order1.json
  python benchmarks/collective_order.py --devices=2 --out=runs/order2.json
"""

import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def programs():
  """{name: compiled HLO text} of the generator's steps (sample-wise,
  class-wise, error-maximizing, EOT, REM), the learner's training steps
  (every augmentation) and eval step, and every battery defense's step."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import test_tiny  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  from ue_jax.core import defenses  # pylint: disable=g-import-not-at-top
  from ue_jax.core import optim  # pylint: disable=g-import-not-at-top
  from ue_jax.core import steps  # pylint: disable=g-import-not-at-top
  from ue_jax.core.state import create_state  # pylint: disable=g-import-not-at-top
  from ue_jax.evaluation import battery  # pylint: disable=g-import-not-at-top
  from ue_jax.models import get_model  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import device_data  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from ue_jax.search import generate  # pylint: disable=g-import-not-at-top

  out = {}
  base = test_tiny.get_config()
  placement = sharding.Placement(sharding.make_mesh(base.mesh.data))
  train = device_data.place(helpers.synthetic(n=64), placement)
  rows = np.arange(base.generate.batch_size)

  def variant(**fields):
    cfg = test_tiny.get_config()
    for path, value in fields.items():
      block, field = path.split("__")
      cfg[block][field] = value
    return cfg

  generators = {
      "samplewise": variant(),
      "classwise": variant(noise__layout="classwise"),
      "error_max": variant(noise__kind="error_max"),
      "eot": variant(noise__eot_augment="crop_flip", noise__eot_samples=2,
                     generate__augment="crop_flip"),
      "rem": variant(noise__eot_augment="crop", noise__rem_radius=4 / 255,
                     noise__rem_steps=2, generate__augment="crop"),
  }
  for name, cfg in generators.items():
    state, fns = generate.build(cfg, train, placement)
    for step_name, step in zip(("model", "noise", "eval"), fns):
      out[f"generate/{name}/{step_name}"] = step.lower(
          state, train.batch(rows)).compile().as_text()

  e = base.evaluate
  model = get_model(e.model or base.model.name, num_classes=4,
                    width=e.width or base.model.width)
  tx = optim.recipe(e.lr, epochs=2, steps_per_epoch=4, momentum=e.momentum,
                    weight_decay=e.weight_decay, grad_clip=e.grad_clip)
  state, shardings = placement.create(functools.partial(
      create_state, model, tx, seed=0, image_shape=train.image_shape))
  batch = train.batch(np.arange(e.batch_size))
  learner_steps = {f"learner/{a}": functools.partial(steps.model_step,
                                                     augment=a)
                   for a in ("none", "crop", "crop_flip",
                             "crop_flip_rotate")}
  learner_steps.update({f"battery/{d}": battery.step_fn(base, d, 4)
                        for d in defenses.BATCH
                        if d != "grayscale"})  # colour only; data: 1 channel
  for name, fn in learner_steps.items():
    out[name] = placement.jit_step(fn, shardings, full_batches=True).lower(
        state, batch).compile().as_text()
  out["learner/eval"] = placement.jit_step(
      steps.eval_step, shardings, returns_state=False).lower(
          state, batch).compile().as_text()
  return out


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--devices", type=int, default=2)
  p.add_argument("--out", default="")
  a = p.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", a.devices)
  from ue_jax.parallel import collectives  # pylint: disable=g-import-not-at-top
  rows = []
  for name, hlo in programs().items():
    rows.append({"program": name, "collectives": len(collectives.find(hlo)),
                 "unordered_pairs": len(collectives.unordered(hlo))})
  print(f"{jax.device_count()} CPU devices, jax {jax.__version__}")
  print("| program | collectives | unordered pairs |\n|---|---|---|")
  for r in rows:
    print(f"| {r['program']} | {r['collectives']} | {r['unordered_pairs']} |")
  if a.out:
    with open(a.out, "w") as f:
      json.dump({"devices": jax.device_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
