"""Models by name: `get_model(name, num_classes=..., width=..., dtype=...)`.

`dtype` ("float32" | "bfloat16", config field model.compute_dtype) is the
dtype the layers compute in (Flax's `dtype`); parameters stay float32
(`param_dtype`) and every model returns float32 logits. A model's module
is imported when the model is built (MODULES: name -> module, class and
its fixed arguments), so a run loads only the models it uses.
"""

import importlib

import jax.numpy as jnp

from ue_jax.runtime.errors import UEError

# name -> (module of ue_jax/models/, class, fixed keyword arguments).
MODULES = {
    "resnet18": ("resnet", "ResNet", {}),
    "small_cnn": ("small_cnn", "SmallCNN", {}),
    "small_cnn_avg": ("small_cnn", "SmallCNN", {"pool": "avg"}),
    "vgg11": ("vgg", "VGG", {}),
    "mobilenetv2": ("mobilenet", "MobileNetV2", {}),
    "vit": ("vit", "ViT", {}),
}


def _builder(module: str, cls: str, fixed):
  def build(num_classes, width, dtype):
    model = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return model(num_classes, width=width, dtype=dtype, **fixed)
  return build


# name -> fn(num_classes, width, dtype) that builds the Flax module.
MODELS = {name: _builder(*spec) for name, spec in MODULES.items()}
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
