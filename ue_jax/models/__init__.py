"""Models by name: `get_model(name, num_classes=..., width=...)`."""

from ue_jax.runtime.errors import UEError
from ue_jax.models.resnet import ResNet
from ue_jax.models.mobilenet import MobileNetV2
from ue_jax.models.small_cnn import SmallCNN
from ue_jax.models.vgg import VGG
from ue_jax.models.vit import ViT

MODELS = {
    "resnet18": lambda num_classes, width: ResNet(num_classes, width=width),
    "small_cnn": lambda num_classes, width: SmallCNN(num_classes, width=width),
    "small_cnn_avg": lambda num_classes, width: SmallCNN(
        num_classes, width=width, pool="avg"),
    "vgg11": lambda num_classes, width: VGG(num_classes, width=width),
    "mobilenetv2": lambda num_classes, width: MobileNetV2(num_classes,
                                                          width=width),
    "vit": lambda num_classes, width: ViT(num_classes, width=width),
}


def get_model(name: str, *, num_classes: int, width: int):
  if name not in MODELS:
    raise UEError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
  return MODELS[name](num_classes, width)
