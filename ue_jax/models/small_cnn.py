"""A small CNN (the original repository's ToyModel shape), for tests and quick runs.

Three blocks of conv3x3-BN-ReLU-pool(2) with `width`, 2*width, 4*width channels,
global average pooling and a linear head. `pool='avg'` swaps max-pooling for
average pooling, whose backward pass XLA:CPU compiles much better.
"""

import functools
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from ue_jax.models.resnet import torch_bias_init, torch_kernel_init


class SmallCNN(nn.Module):
  num_classes: int
  width: int = 32
  pool: str = "max"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.pool == "max":
      pool = nn.max_pool
    else:  # average over real pixels only, as PyTorch's count_include_pad=False
      pool = functools.partial(nn.avg_pool, count_include_pad=False)
    x = x.astype(self.dtype)
    for i in range(3):
      x = nn.Conv(self.width * 2**i, (3, 3), padding="SAME", use_bias=False,
                  kernel_init=torch_kernel_init, dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype)(x)
      x = pool(nn.relu(x), (2, 2), strides=(2, 2), padding="SAME")
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(x.shape[-1]), dtype=self.dtype)(x)
    return x.astype(jnp.float32)
