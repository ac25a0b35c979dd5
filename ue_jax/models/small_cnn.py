"""A small CNN (the original repository's ToyModel shape), for tests and quick runs.

Three blocks of conv3x3-BN-ReLU-pool(2) with `width`, 2*width, 4*width channels,
global average pooling and a linear head. `pool='avg'` swaps max-pooling for
average pooling.

Max-pooling is written as a reshape and a max over the 2x2 windows, not as
`nn.max_pool`: the same function and, without exact ties inside a window, the
same gradient, but `nn.max_pool`'s backward pass is a select-and-scatter that
XLA:CPU runs slowly. The reshape form makes this model's PGD step 2.7x faster
on the 2-core CPU (docs/operations.md). At a tie the reshape form shares the
gradient equally among the tied entries where select-and-scatter gives it to
the first; after the ReLU the common tie is between zeros, whose gradient the
ReLU drops in both.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ue_jax.models.resnet import torch_bias_init, torch_kernel_init


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2 and "SAME" padding (odd sizes padded with
  -inf at the end), NHWC: equal to `nn.max_pool(x, (2, 2), (2, 2), "SAME")`."""
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)),
                constant_values=-jnp.inf)
  return jnp.max(x.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c),
                 axis=(2, 4))


class SmallCNN(nn.Module):
  num_classes: int
  width: int = 32
  pool: str = "max"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.pool == "max":
      pool = max_pool_2x2
    else:  # average over real pixels only, as PyTorch's count_include_pad=False
      pool = functools.partial(nn.avg_pool, window_shape=(2, 2),
                               strides=(2, 2), padding="SAME",
                               count_include_pad=False)
    x = x.astype(self.dtype)
    for i in range(3):
      x = nn.Conv(self.width * 2**i, (3, 3), padding="SAME", use_bias=False,
                  kernel_init=torch_kernel_init, dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype)(x)
      x = pool(nn.relu(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(x.shape[-1]), dtype=self.dtype)(x)
    return x.astype(jnp.float32)
