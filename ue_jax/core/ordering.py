"""Ordering a step's collectives: values tied to the rows they must wait for.

On several devices the partitioner turns each take by row (a batch's
images, its noise rows, a permutation of the batch) and each scatter into a
row-sharded array into collectives, and two of them that do not depend on
each other may run in either order, which can deadlock XLA:CPU's
in-process collectives (ue_jax.parallel.collectives). These two helpers let
a step choose the order; on one device, or under a plain `jax.jit`, they
change nothing but add a select.

- `after(first, value)`: `value`, computed from `first` as well.
- `gather_rows(x)`: a row-sharded `x` whole on every device, by one
  all-gather of `x` itself.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec


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
  """`x`, rows sharded over the mesh the step is traced over
  (ue_jax.parallel.collectives.in_mesh), whole on every device: one
  all-gather of `x` as it is computed (pinned to its row sharding first, so
  that the partitioner does not gather the operands of the op that made it
  instead, one collective each). Unchanged outside a mesh, e.g. under a
  plain `jax.jit`."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  x = jax.lax.with_sharding_constraint(x, PartitionSpec(mesh.axis_names))
  return jax.lax.with_sharding_constraint(x, PartitionSpec())
