"""VGG-11 with BatchNorm (Simonyan & Zisserman's configuration "A"), narrow.

Eight conv3x3-BN-ReLU layers with `width` x (1, M, 2, M, 4, 4, M, 8, 8, M, 8,
8, M) channels (M: 2x2 max-pooling, "SAME" on odd sizes), global average
pooling and one linear head (the CIFAR variant's single classifier layer).
`width=64` is the standard VGG-11 (channels 64..512); the convolutions carry
no bias (BatchNorm follows each). Any input size works: 28x28 pools to
14, 7, 4, 2, 1.
"""

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from ue_jax.models.resnet import torch_bias_init, torch_kernel_init
from ue_jax.models.small_cnn import max_pool_2x2

# Channel multipliers of width; "M" is a 2x2 max-pool.
VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG(nn.Module):
  num_classes: int
  width: int = 64
  plan: tuple = VGG11
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = x.astype(self.dtype)
    for item in self.plan:
      if item == "M":
        x = max_pool_2x2(x)
        continue
      x = nn.Conv(self.width * item, (3, 3), padding="SAME", use_bias=False,
                  kernel_init=torch_kernel_init, dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype)(x)
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(x.shape[-1]), dtype=self.dtype)(x)
    return x.astype(jnp.float32)
