"""A MobileNetV2-style net (Sandler et al. 2018) for 28-32 px inputs.

Stem conv3x3 (stride 1, as CIFAR MobileNetV2 variants) with `width`
channels, then inverted-residual blocks (t, c, n, s): expansion t, output
channels c x width, n blocks, first stride s:

  (1, 1, 1, 1), (6, 2, 2, 2), (6, 4, 2, 2), (6, 8, 2, 2)

each block: [1x1 expand to t*c_in, BN, ReLU6 when t > 1], depthwise 3x3
(stride s), BN, ReLU6, 1x1 project to c, BN (linear bottleneck), plus the
input when the stride is 1 and channels match. Then 1x1 conv to 16 x width,
BN, ReLU6, global average pooling and a linear head. Convolutions carry no
bias. width=16 gives channels 16/32/64/128 and a 256-wide head.
"""

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from ue_jax.models.resnet import torch_bias_init, torch_kernel_init

# (expansion, channel multiple of width, blocks, first stride)
STAGES = ((1, 1, 1, 1), (6, 2, 2, 2), (6, 4, 2, 2), (6, 8, 2, 2))
HEAD = 16  # last 1x1 conv: HEAD x width channels


def _conv(features, kernel, *, strides=1, groups=1, dtype=jnp.float32):
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=strides,
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 feature_group_count=groups, kernel_init=torch_kernel_init,
                 dtype=dtype)


def depthwise_3x3(x, kernel, *, strides: int = 1):
  """A 3x3 depthwise convolution (padding 1, as PyTorch's) written as nine
  shifted multiply-adds: `kernel` [3, 3, 1, C] as nn.Conv's with
  feature_group_count=C, the same function. XLA:CPU runs grouped
  convolutions slowly (10.9 img/s for this model's training on a busy 2-core
  machine); stride 2 takes every second output of the stride-1 result."""
  h, w = x.shape[1], x.shape[2]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = sum(xp[:, i:i + h, j:j + w, :] * kernel[i, j, 0]
            for i in range(3) for j in range(3))
  return out[:, ::strides, ::strides, :] if strides > 1 else out


class DepthwiseConv(nn.Module):
  """Bias-free 3x3 depthwise convolution (PyTorch's default init)."""
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", torch_kernel_init, (3, 3, 1, x.shape[-1]))
    return depthwise_3x3(x, kernel.astype(self.dtype), strides=self.strides)


class InvertedResidual(nn.Module):
  features: int
  expansion: int
  strides: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                epsilon=1e-5, dtype=self.dtype)
    hidden = x.shape[-1] * self.expansion
    y = x
    if self.expansion != 1:
      y = nn.relu6(norm()(_conv(hidden, 1, dtype=self.dtype)(y)))
    y = DepthwiseConv(self.strides, dtype=self.dtype)(y)
    y = nn.relu6(norm()(y))
    y = norm()(_conv(self.features, 1, dtype=self.dtype)(y))
    if self.strides == 1 and x.shape[-1] == self.features:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  num_classes: int
  width: int = 32
  stages: tuple = STAGES
  head: int = HEAD
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                epsilon=1e-5, dtype=self.dtype)
    x = _conv(self.width, 3, dtype=self.dtype)(x.astype(self.dtype))
    x = nn.relu6(norm()(x))
    for t, c, n, s in self.stages:
      for i in range(n):
        x = InvertedResidual(c * self.width, t, s if i == 0 else 1,
                             dtype=self.dtype)(x, train=train)
    x = _conv(self.head * self.width, 1, dtype=self.dtype)(x)
    x = nn.relu6(norm()(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(x.shape[-1]), dtype=self.dtype)(x)
    return x.astype(jnp.float32)
