"""ue_jax.parallel.collectives: the collectives of compiled programs, and
the default CPU path's programs, which hold none."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import jax
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
    """benchmarks/collective_order.py on one CPU device (ue_jax.main's
    default): the generator's steps (sample-wise, class-wise,
    error-maximizing, EOT, REM), the learner's and every battery defense's
    compile to programs with no collective, so no rendezvous can wait."""
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "order.json")
      proc = subprocess.run(
          [sys.executable, "benchmarks/collective_order.py", "--devices=1",
           f"--out={out}"], cwd=helpers.REPO, capture_output=True, text=True,
          timeout=900, check=False, env=dict(os.environ, XLA_FLAGS=""))
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      with open(out) as f:
        got = json.load(f)
    self.assertEqual(got["devices"], 1)
    names = [r["program"] for r in got["rows"]]
    for want in ("generate/samplewise/noise", "generate/eot/noise",
                 "generate/rem/model", "battery/mixup", "battery/cutmix",
                 "battery/ueraser", "learner/crop_flip"):
      self.assertIn(want, names)
    for r in got["rows"]:
      self.assertEqual(r["collectives"], 0, r)


if __name__ == "__main__":
  absltest.main()
