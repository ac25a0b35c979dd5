"""Which collectives of a compiled program may run in either order.

XLA:CPU runs the devices of one process on a shared thread pool and each
collective waits at a rendezvous for every device. If a program holds two
collectives neither of which depends on the other (and XLA did not combine
them), the devices may reach them in different orders, each waiting at the
other one: a deadlock, which XLA ends with "Termination timeout for all
reduce/all gather" (docs/performance.md has a ten-line reproduction). A
program whose collectives form one chain of data dependencies cannot do
that. `unordered` finds the pairs that break the chain in compiled HLO text
(`jax.jit(f).lower(...).compile().as_text()`); tests/collectives_test.py
checks every step of the pipeline with it.

Two helpers put a step's collectives on one chain where the partitioner
would not: `after(first, value)` makes `value` (and so every collective
computed from it) wait for `first`, and `gather_rows(x)` gathers a
row-sharded `x` to every device of the mesh the step is traced over
(`in_mesh`), so that a scatter into a sharded array can take its indices
and updates whole, each gathered by one collective in an order the step
chooses, instead of the partitioner's two independent all-gathers.
"""

import re
from typing import Dict, List, Set, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

KINDS = ("all-reduce", "all-gather", "all-to-all", "collective-permute",
         "reduce-scatter", "collective-broadcast")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"(?:^|[\s}\]])([a-z][a-z0-9\-]*)\(")
_OPERAND = re.compile(r"%([\w.\-]+)")


def _computations(hlo: str) -> Dict[str, List[str]]:
  """Instruction lines of each computation, by name."""
  comps, current = {}, None
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      name = line.split("(")[0].split()[-1].lstrip("%")
      current = comps.setdefault(name, [])
    elif line.startswith("}"):
      current = None
    elif current is not None:
      current.append(line)
  return comps


def _parse(line: str):
  """(name, opcode, operand names) of an instruction line, or None."""
  found = _INSTRUCTION.match(line)
  if not found:
    return None
  name, rest = found.groups()
  rest = rest.split(", metadata=")[0]
  op = _OPCODE.search(rest)
  if not op:
    return None
  return name, op.group(1), _OPERAND.findall(rest[op.end():])


def unordered(hlo: str) -> List[Tuple[str, str, str]]:
  """(computation, collective, collective) for every pair of collectives of
  one computation where neither depends on the other. Empty: the
  collectives of each computation form a chain. (An async pair counts
  once, by its -start.)"""
  pairs = []
  for comp, lines in _computations(hlo).items():
    deps: Dict[str, List[str]] = {}
    collectives = []
    for line in lines:
      parsed = _parse(line)
      if parsed is None:
        continue
      name, op, operands = parsed
      deps[name] = operands
      if op.endswith("-done"):
        continue
      if any(op == k or op == k + "-start" for k in KINDS):
        collectives.append(name)
    if len(collectives) < 2:
      continue
    is_collective = set(collectives)
    upstream: Dict[str, Set[str]] = {}  # the collectives each one needs
    for name in deps:  # HLO text lists operands before their users
      seen: Set[str] = set()
      for operand in deps[name]:
        if operand in upstream:
          seen |= upstream[operand]
          if operand in is_collective:
            seen.add(operand)
      upstream[name] = seen
    for i, a in enumerate(collectives):
      for b in collectives[i + 1:]:
        if a not in upstream[b] and b not in upstream[a]:
          pairs.append((comp, a, b))
  return pairs


def after(first: jax.Array, value):
  """`value` (an array or a pytree of arrays), computed from `first` as
  well, so that a collective computed from the result runs after every
  collective `first` needed. `first` and every leaf of `value` have the same
  rows (leading axis, the batch's sharding): each row of the result reads
  its own row of `first` through a select whose condition is never true
  (more set bits than the value has bits: XLA cannot prove it false, as it
  does |x| < 0), so the values are unchanged bit for bit and no device
  needs another's rows. (An optimization barrier does not do it: XLA:CPU
  removes barriers after partitioning, and the order with them.)"""
  col = first.reshape(first.shape[0], -1)[:, 0]
  bits = col.dtype.itemsize * 8
  if not jnp.issubdtype(col.dtype, jnp.integer):
    col = jax.lax.bitcast_convert_type(col, jnp.dtype(f"uint{bits}"))
  never = jax.lax.population_count(col) > bits

  def tie(leaf):
    cond = never.reshape(never.shape + (1,) * (leaf.ndim - 1))
    return jnp.where(cond, jnp.zeros((), leaf.dtype), leaf)
  return jax.tree.map(tie, value)


def gather_rows(x: jax.Array) -> jax.Array:
  """`x` (rows sharded over the mesh the step is traced over, `in_mesh`)
  whole on every device: one all-gather of `x` as it is computed (pinned to
  its row sharding first, so that the partitioner does not gather the
  operands of the op that made it instead, one collective each).
  Unchanged outside a mesh, e.g. under a plain `jax.jit`."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  x = jax.lax.with_sharding_constraint(x, PartitionSpec(mesh.axis_names))
  return jax.lax.with_sharding_constraint(x, PartitionSpec())


def in_mesh(fn, mesh: jax.sharding.Mesh):
  """`fn`, traced with `mesh` as the current (abstract) mesh, so that
  `gather_rows` inside it knows the devices. Keeps `fn`'s name."""
  def traced(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)
  traced.__name__ = getattr(fn, "__name__", "step")
  return traced
