"""CIFAR ResNet-18 (the kuangliu variant the original code uses), in Flax Linen.

3x3 stride-1 stem without max-pool, four stages of two BasicBlocks with
first-block strides 1/2/2/2, global average pooling and a linear head. With
`width=64` this is the paper's generator and learner (11.17 M parameters at
32x32x3); `width=16` gives the narrow variant (channels 16/32/64/128) that CPU
runs need. Global average pooling (instead of the original avg_pool2d(4)) makes
the model accept any input size, e.g. 28x28x1; at 32x32 the two coincide.

Initialisation follows PyTorch's defaults (kaiming-uniform with a=sqrt(5) for
weights, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the head bias) and BatchNorm
uses PyTorch's momentum 0.1 (Flax momentum 0.9) and eps 1e-5.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

# PyTorch's default kaiming_uniform_(a=sqrt(5)) is U(-b, b) with b^2 = 1/fan_in.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  bound = 1.0 / jnp.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# PyTorch pads a 3x3 conv by 1 on every side and a 1x1 conv by 0. Flax's
# "SAME" would pad (0, 1) for stride 2 on even sizes and shift the grid.
Conv = functools.partial(nn.Conv, use_bias=False, padding=((1, 1), (1, 1)),
                         kernel_init=torch_kernel_init)


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    conv = functools.partial(Conv, dtype=self.dtype)
    y = conv(self.features, (3, 3), strides=self.strides)(x)
    y = nn.relu(norm()(y))
    y = conv(self.features, (3, 3))(y)
    y = norm()(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = norm()(conv(self.features, (1, 1), strides=self.strides,
                      padding="VALID")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR-style ResNet; `width` sets the first stage's channel count."""
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = Conv(self.width, (3, 3), dtype=self.dtype)(x.astype(self.dtype))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=self.dtype)(x)
    x = nn.relu(x)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides, dtype=self.dtype)(
            x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(x.shape[-1]), dtype=self.dtype)(x)
    return x.astype(jnp.float32)
