"""The one state pytree of a min-min run: model, optimizer, RNG and the noise."""

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any


class UEState(struct.PyTreeNode):
  """Everything generation updates. `noise` is delta as noise.storage holds
  it (noise.Codec): float32, bfloat16, or int8 integer steps of eps/127,
  [0,1] units once decoded; [N,H,W,C] sample-wise (N padded to a multiple
  of the device count) or [classes,H,W,C] class-wise; None for plain
  training (evaluation)."""
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  noise: Optional[jax.Array]
  rng: jax.Array
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}


def create_state(model, tx, *, seed: int, image_shape: Sequence[int],
                 noise_shape: Optional[Sequence[int]] = None) -> UEState:
  """Initialises params (from `seed`), optimizer state and, given
  `noise_shape`, float32 zero noise (else None; generate.build sets the
  stored noise itself)."""
  key = jax.random.key(seed)
  init_key, state_key = jax.random.split(key)

  @jax.jit
  def init():
    variables = model.init(init_key, jnp.zeros((1, *image_shape)), train=False)
    params = variables["params"]
    noise = None if noise_shape is None else jnp.zeros(noise_shape, jnp.float32)
    return UEState(step=jnp.zeros((), jnp.int32), params=params,
                   batch_stats=variables.get("batch_stats", {}),
                   opt_state=tx.init(params), noise=noise, rng=state_key,
                   apply_fn=model.apply, tx=tx)

  return init()
