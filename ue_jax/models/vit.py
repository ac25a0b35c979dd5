"""A small Vision Transformer (Dosovitskiy et al. 2021) for 28-32 px inputs.

Non-overlapping `patch` x `patch` patches (a strided conv with bias) embedded
in dim = 4 x `width` (width 16: dim 64, comparable in scale to the width-16
ResNet's third stage), plus a learned position embedding; `depth`
pre-norm blocks of multi-head self-attention (`heads` heads, qkv and output
projections with bias) and an MLP (dim -> mlp_ratio x dim -> dim, GELU);
a final LayerNorm, the mean over tokens (no class token) and a linear head.
No dropout. The token count is (H / patch) x (W / patch): 49 at 28x28.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

DIM_PER_WIDTH = 4


class Block(nn.Module):
  heads: int
  mlp_ratio: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, d = x.shape
    h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    qkv = nn.Dense(3 * d, dtype=self.dtype)(h).reshape(b, t, 3, self.heads,
                                                        d // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) / jnp.sqrt(d // self.heads)
    att = jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v)
    x = x + nn.Dense(d, dtype=self.dtype)(att.reshape(b, t, d))
    h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    h = nn.gelu(nn.Dense(self.mlp_ratio * d, dtype=self.dtype)(h))
    return x + nn.Dense(d, dtype=self.dtype)(h)


class ViT(nn.Module):
  num_classes: int
  width: int = 16
  patch: int = 4
  depth: int = 4
  heads: int = 4
  mlp_ratio: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    del train  # no dropout, no BatchNorm
    dim = DIM_PER_WIDTH * self.width
    x = nn.Conv(dim, (self.patch, self.patch), strides=self.patch,
                padding="VALID", dtype=self.dtype)(x.astype(self.dtype))
    b, gh, gw, _ = x.shape
    x = x.reshape(b, gh * gw, dim)
    x = x + self.param("pos_embedding", nn.initializers.normal(0.02),
                       (1, gh * gw, dim))
    for _ in range(self.depth):
      x = Block(self.heads, self.mlp_ratio, dtype=self.dtype)(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                 dtype=self.dtype)(jnp.mean(x, axis=1))
    return x.astype(jnp.float32)
