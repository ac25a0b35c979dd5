"""Models by name: `get_model(name, num_classes=..., width=..., dtype=...)`.

`dtype` ("float32" | "bfloat16", config field model.compute_dtype) is the
dtype the layers compute in (Flax's `dtype`); parameters stay float32
(`param_dtype`) and every model returns float32 logits.
"""

import jax.numpy as jnp

from ue_jax.runtime.errors import UEError
from ue_jax.models.resnet import ResNet
from ue_jax.models.mobilenet import MobileNetV2
from ue_jax.models.small_cnn import SmallCNN
from ue_jax.models.vgg import VGG
from ue_jax.models.vit import ViT

MODELS = {
    "resnet18": lambda num_classes, width, dtype: ResNet(
        num_classes, width=width, dtype=dtype),
    "small_cnn": lambda num_classes, width, dtype: SmallCNN(
        num_classes, width=width, dtype=dtype),
    "small_cnn_avg": lambda num_classes, width, dtype: SmallCNN(
        num_classes, width=width, pool="avg", dtype=dtype),
    "vgg11": lambda num_classes, width, dtype: VGG(num_classes, width=width,
                                                   dtype=dtype),
    "mobilenetv2": lambda num_classes, width, dtype: MobileNetV2(
        num_classes, width=width, dtype=dtype),
    "vit": lambda num_classes, width, dtype: ViT(num_classes, width=width,
                                                 dtype=dtype),
}
MODEL_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def get_model(name: str, *, num_classes: int, width: int,
              dtype: str = "float32"):
  """The Flax module `name`, computing in `dtype` (a MODEL_DTYPES key)."""
  if name not in MODELS:
    raise UEError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
  if dtype not in MODEL_DTYPES:
    raise UEError(f"unknown compute dtype {dtype!r}; choose one of "
                  f"{sorted(MODEL_DTYPES)}")
  return MODELS[name](num_classes, width, MODEL_DTYPES[dtype])
