"""ue_jax.parallel.collectives: the collectives of compiled programs, and
the default CPU path's programs, which hold none."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from absl.testing import absltest

from tests import helpers
from ue_jax.parallel import collectives

# Two all-reduces of independent operands (a pair in either order), then an
# all-gather that needs the first (ordered after it, not after the second).
_HLO = """
HloModule m, entry_computation_layout={(f32[4]{0}, f32[4]{0})->f32[8]{0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

ENTRY %main (p0: f32[4], p1: f32[4]) -> f32[8] {
  %p0 = f32[4]{0} parameter(0)
  %p1 = f32[4]{0} parameter(1)
  %ar0 = f32[4]{0} all-reduce(%p0), channel_id=1, to_apply=%add
  %ar1 = f32[4]{0} all-reduce(%p1), channel_id=2, to_apply=%add
  %neg = f32[4]{0} negate(%ar0)
  %ag = f32[8]{0} all-gather(%neg), channel_id=3, dimensions={0}
  %done = f32[8]{0} all-gather-done(%ag)
  ROOT %out = f32[8]{0} add(%ag, %ag), metadata={op_name="x(%ar1)"}
}
"""

_COMPILED = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp
    jax.config.update("jax_num_cpu_devices", 2)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from ue_jax.parallel import collectives
    mesh = Mesh(jax.devices(), ("d",))
    rows, rep = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    a = jax.device_put(jnp.ones((8, 3)), rows)
    b = jax.device_put(jnp.ones((8, 5)), rows)
    gather = lambda v: jax.lax.with_sharding_constraint(v, rep)
    both = jax.jit(lambda a, b: gather(a * 2).sum() + gather(b + 1).sum())
    chain = jax.jit(lambda a, b: jnp.tanh(b * jnp.tanh(a).sum()).sum())
    hlo = {name: f.lower(a, b).compile().as_text()
           for name, f in (("both", both), ("chain", chain))}
    print(json.dumps({"chain_all_reduces": hlo["chain"].count(" all-reduce("),
                      "found": {k: collectives.find(v) for k, v in hlo.items()},
                      **{k: collectives.unordered(v) for k, v in hlo.items()}}))
    """)


_ONE_DEVICE = textwrap.dedent("""
    import json
    import jax
    jax.config.update("jax_num_cpu_devices", 1)
    from tests import collectives_test
    from ue_jax.parallel import collectives
    print(json.dumps({"devices": jax.device_count(), "found": {
        name: collectives.find(hlo)
        for name, hlo in collectives_test.programs().items()}}))
    """)


def programs():
  """{name: compiled HLO text} of every step of the pipeline on the tiny
  test config over this process's devices: the generator's (sample-wise,
  class-wise, error-maximizing, EOT, REM), the learner's training steps
  (every augmentation) and eval step, and every battery defense's."""
  # pylint: disable=g-import-not-at-top
  from configs import test_tiny
  from ue_jax.core import defenses
  from ue_jax.core import optim
  from ue_jax.core import steps
  from ue_jax.core.state import create_state
  from ue_jax.evaluation import battery
  from ue_jax.models import get_model
  from ue_jax.parallel import device_data
  from ue_jax.parallel import sharding
  from ue_jax.search import generate
  # pylint: enable=g-import-not-at-top
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


def run_child(test, code, *, timeout):
  """Runs `code` in a fresh interpreter on one CPU device (XLA_FLAGS
  cleared); the JSON of its last stdout line."""
  proc = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO,
                        capture_output=True, text=True, timeout=timeout,
                        check=False, env=dict(os.environ, XLA_FLAGS=""))
  test.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


class UnorderedTest(absltest.TestCase):

  def test_pairs_of_a_handwritten_module(self):
    # ar0 -> ag is a chain; ar1 is independent of both. The -done half of
    # an async pair and names inside metadata count for nothing.
    self.assertCountEqual(collectives.unordered(_HLO),
                          [("main", "ar0", "ar1"), ("main", "ar1", "ag")])

  def test_a_chain_has_no_pairs(self):
    chained = _HLO.replace("all-reduce(%p1)", "all-reduce(%ag)").replace(
        "%ar1 = f32[4]{0}", "%ar1 = f32[8]{0}")
    lines = chained.splitlines()
    ar1 = next(i for i, l in enumerate(lines) if "%ar1 =" in l)
    line = lines.pop(ar1)
    lines.insert(next(i for i, l in enumerate(lines) if "%done" in l), line)
    self.assertEqual(collectives.unordered("\n".join(lines)), [])

  def test_compiled_programs_on_two_cpu_devices(self):
    # Two independent all-gathers (the ten-line program that deadlocks
    # XLA:CPU) are a pair; a sum over b scaled by a sum over a (two
    # all-reduces, the second needing the first) is a chain.
    got = run_child(self, _COMPILED, timeout=240)
    self.assertLen(got["both"], 1)
    self.assertIn("all-gather", got["both"][0][1])
    self.assertEqual(got["chain"], [])
    self.assertGreaterEqual(got["chain_all_reduces"], 2)
    # `find` sees the same collectives.
    self.assertEqual(got["found"]["both"], ["all-gather", "all-gather"])
    self.assertGreaterEqual(len(got["found"]["chain"]), 2)

  def test_find_in_a_handwritten_module(self):
    # Three collectives; the -done half of the async pair is not one more,
    # and an opcode named inside metadata is not one.
    self.assertEqual(collectives.find(_HLO),
                     ["all-reduce", "all-reduce", "all-gather"])


class DefaultPathTest(absltest.TestCase):

  def test_every_step_on_one_device_has_no_collective(self):
    """On one CPU device (ue_jax.main's default) the generator's steps
    (sample-wise, class-wise, error-maximizing, EOT, REM), the learner's
    and every battery defense's compile to programs with no collective, so
    no rendezvous can wait."""
    got = run_child(self, _ONE_DEVICE, timeout=900)
    self.assertEqual(got["devices"], 1)
    for want in ("generate/samplewise/noise", "generate/eot/noise",
                 "generate/rem/model", "battery/mixup", "battery/cutmix",
                 "battery/ueraser", "learner/crop_flip", "learner/eval"):
      self.assertIn(want, got["found"])
    for name, found in got["found"].items():
      self.assertEqual(found, [], name)


if __name__ == "__main__":
  absltest.main()
