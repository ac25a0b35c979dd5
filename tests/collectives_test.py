"""ue_jax.parallel.collectives: unordered pairs of collectives in HLO."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from tests import helpers
from ue_jax.core import ordering
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
    from ue_jax.core import ordering
    from ue_jax.parallel import collectives
    mesh = Mesh(jax.devices(), ("d",))
    rows, rep = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    a = jax.device_put(jnp.ones((8, 3)), rows)
    b = jax.device_put(jnp.ones((8, 5)), rows)
    gather = lambda v: jax.lax.with_sharding_constraint(v, rep)
    both = jax.jit(lambda a, b: gather(a * 2).sum() + gather(b + 1).sum())
    chain = jax.jit(lambda a, b: jnp.tanh(b * jnp.tanh(a).sum()).sum())
    def tied_fn(a, b):  # the same two gathers, the second after the first
      ga = ordering.gather_rows(a * 2)
      return ga.sum() + ordering.gather_rows(
          ordering.after(ga, b + 1)).sum()
    tied = jax.jit(collectives.in_mesh(tied_fn, mesh))
    hlo = {name: f.lower(a, b).compile().as_text()
           for name, f in (("both", both), ("chain", chain), ("tied", tied))}
    print(json.dumps({"chain_all_reduces": hlo["chain"].count(" all-reduce("),
                      "tied_all_gathers": hlo["tied"].count(" all-gather("),
                      "same_value": float(both(a, b)) == float(tied(a, b)),
                      **{k: collectives.unordered(v) for k, v in hlo.items()}}))
    """)


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
    proc = subprocess.run([sys.executable, "-c", _COMPILED],
                          cwd=helpers.REPO, capture_output=True, text=True,
                          timeout=240, check=False,
                          env=dict(os.environ, XLA_FLAGS=""))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertLen(got["both"], 1)
    self.assertIn("all-gather", got["both"][0][1])
    self.assertEqual(got["chain"], [])
    self.assertGreaterEqual(got["chain_all_reduces"], 2)
    # `after` puts the second gather behind the first: still two
    # all-gathers, now a chain, and the same value.
    self.assertEqual(got["tied"], [])
    self.assertEqual(got["tied_all_gathers"], 2)
    self.assertTrue(got["same_value"])

  def test_every_step_of_the_pipeline_is_one_chain(self):
    """benchmarks/collective_order.py on 2 CPU devices: the generator's
    steps (sample-wise, class-wise, error-maximizing, EOT, REM), the
    learner's and every battery defense's hold collectives, none of them in
    an unordered pair."""
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "order.json")
      proc = subprocess.run(
          [sys.executable, "benchmarks/collective_order.py", "--devices=2",
           f"--out={out}"], cwd=helpers.REPO, capture_output=True, text=True,
          timeout=900, check=False, env=dict(os.environ, XLA_FLAGS=""))
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      with open(out) as f:
        rows = json.load(f)["rows"]
    names = [r["program"] for r in rows]
    for want in ("generate/samplewise/noise", "generate/eot/noise",
                 "generate/rem/model", "battery/mixup", "battery/cutmix",
                 "battery/ueraser", "learner/crop_flip"):
      self.assertIn(want, names)
    for r in rows:
      self.assertGreaterEqual(r["collectives"], 1, r)
      self.assertEqual(r["unordered_pairs"], 0, r)


class AfterTest(absltest.TestCase):
  """`after` and `gather_rows` change no value (one device, no mesh)."""

  def test_values_are_unchanged_bit_for_bit(self):
    first = {
        "f32": jnp.array([[np.nan, -0.0], [np.inf, 1.5], [-np.inf, 0.0]],
                         jnp.float32),
        "u8": jnp.array([[255], [0], [7]], jnp.uint8),
        "i32": jnp.array([-2**31, -1, 2**31 - 1], jnp.int32),
        "bf16": jnp.array([[np.nan], [-0.0], [3.0]], jnp.bfloat16),
    }
    value = {"x": jnp.array([[np.nan, -0.0, 1.0], [np.inf, 0.0, -1.0],
                             [-np.inf, 2.0, -0.0]], jnp.float32),
             "i": jnp.array([2**31 - 1, -2**31, 0], jnp.int32),
             "u": jnp.array([[0, 255], [1, 2], [3, 4]], jnp.uint8)}
    for name, f in first.items():
      with self.subTest(first=name):
        got = jax.jit(ordering.after)(f, value)
        for key in value:
          self.assertEqual(got[key].dtype, value[key].dtype)
          np.testing.assert_array_equal(
              np.asarray(got[key]).view(np.uint8),
              np.asarray(value[key]).view(np.uint8))

  def test_gather_rows_outside_a_mesh_is_the_identity(self):
    x = jnp.arange(12.0).reshape(4, 3)
    chex.assert_trees_all_equal(jax.jit(ordering.gather_rows)(x), x)


if __name__ == "__main__":
  absltest.main()
