"""Throughput of the jitted steps: PGD (image-steps/s), model step (images/s)
and eval (images/s), medians over repeats.

  python benchmarks/step_throughput.py --model=resnet18 --width=16 \
      --shape=28,28,1 --batch=256 --steps=20

`--unroll=False` times the same PGD as a rolled lax.scan (XLA:CPU runs it
several times slower; see README "Performance").
"""

import argparse
import functools
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import median_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

from ue_jax.io import data as data_lib
from ue_jax.core import noise as noise_lib
from ue_jax.core import optim
from ue_jax.core import steps
from ue_jax.models import get_model
from ue_jax.core.state import create_state


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="resnet18")
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--shape", default="28,28,1")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--unroll", default="True")
  a = p.parse_args()
  shape = tuple(int(s) for s in a.shape.split(","))
  if a.unroll != "True":
    noise_lib.MAX_UNROLL = 1
  rng = np.random.default_rng(0)
  ds = data_lib.make_dataset(
      rng.integers(0, 256, (a.batch, *shape), dtype=np.uint8),
      rng.integers(0, 10, a.batch), 10)
  model = get_model(a.model, num_classes=10, width=a.width)
  tx = optim.sgd(0.1, momentum=0.9, weight_decay=5e-4, grad_clip=5.0)
  state = create_state(model, tx, seed=0, image_shape=shape,
                       noise_shape=ds.images.shape)
  batch = data_lib.gather(ds, np.arange(a.batch))
  noise_fn = jax.jit(functools.partial(steps.noise_step, eps=8 / 255,
                                       step_size=0.8 / 255,
                                       num_steps=a.steps))
  model_fn = jax.jit(steps.model_step)
  eval_fn = steps.jit_eval(release_eps=8 / 255)
  t_pgd = median_seconds(noise_fn, state, batch, repeats=a.repeats)
  t_model = median_seconds(model_fn, state, batch, repeats=a.repeats)
  t_eval = median_seconds(eval_fn, state, batch, repeats=a.repeats)
  print(f"{a.model} width {a.width} input {shape} batch {a.batch} "
        f"({jax.devices()[0].platform}, unroll={a.unroll})")
  print(f"  PGD   {a.batch * a.steps / t_pgd:9.1f} image-steps/s")
  print(f"  model {a.batch / t_model:9.1f} images/s")
  print(f"  eval  {a.batch / t_eval:9.1f} images/s")


if __name__ == "__main__":
  main()
