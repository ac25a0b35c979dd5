"""Protect a folder of your own images: the defaults for a photo folder.

  python -m ue_jax.protect --input=MY_PHOTOS --output=MY_PHOTOS_PROTECTED \
      --config=configs/protect.py

The folder is labelled by one subfolder per class (or --labels=FILE.csv with
rows `file,label`). Every image is squeezed to a 32x32 working copy, the
sample-wise min-min noise is searched on those with a width-16 CIFAR
ResNet-18 (the quick start's generator, affordable on a CPU), then
upsampled bilinearly to each image's own size, bounded to eps and added;
the copies are written as PNG with the same names, sizes and modes.

eps = 16/255: the budget of this project's Fashion-MNIST quick start with
this generator (configs/fashion_mnist.py); resizing a protected
picture averages part of the noise away, which the larger budget leaves room
for. The change is visible on flat areas; --config.noise.eps=0.0313725 (8/255,
the paper's) is the quieter choice and was not measured here.

Measured figures: docs/protect.md (a Fashion-MNIST folder) and README.md.

protect_robust (robust=true): noise made to survive grayscale and JPEG.

  python -m ue_jax.protect --input=MY_PHOTOS --output=MY_PHOTOS_PROTECTED \
      --config=configs/protect.py:robust=true

The robust class-wise search of
configs/cifar10_samplewise.py:scale=cpu,layout=classwise,robust=true: one
noise pattern per class (with --reference, for the input's class only),
fitted on all of the class's images, of form "luma" (the same change in R,
G and B, which a grayscale conversion keeps), every step through 2 JPEG
round trips at qualities drawn from 10/30/50/75, the generator trained on
the "pool" augmentation, the noise written at the bound (eps times its
sign); at most 50 rounds. The same eps as above. Meant for a folder of
several classes: for one class beside --reference it did not protect
against the standard learner (docs/protect.md, "The robust variant for one
class"), and the run warns.
"""

import ml_collections

from configs import common


VARIANTS = ("", "robust=true")


def get_config(arg=None):
  robust = common.parse_arg(arg, robust=("false", "true"))["robust"] == "true"
  c = common.base()
  c.name = "protect"
  for block in ("data", "partial", "release", "battery"):  # the folder
    del c[block]
  c.model.name = "resnet18"
  c.model.width = 16
  c.noise.eps = 16 / 255
  c.noise.step_size = 1.6 / 255
  c.noise.num_steps = 20
  c.generate.batch_size = 256
  c.generate.eval_batch_size = 512
  c.generate.train_steps = 10
  c.generate.max_rounds = 10
  c.evaluate.epochs = 20
  c.evaluate.augment = "crop_flip"

  c.protect = ml_collections.ConfigDict()
  c.protect.size = 32          # working resolution: every image as size x size
  c.protect.channels = 0       # 0: 1 if every image is gray, else 3
  c.protect.upsample = "bilinear"  # bilinear | nearest: noise to native size
  c.protect.preview = 6        # rows of preview.png (original, noise, copy)
  return make_robust(c) if robust else c


def make_robust(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The robust variant's changes on `c` (its budget, model and the rest
  kept): what robust=true does, and the protect page's robust choice."""
  c.name = "protect_robust"
  common.robust_classwise(c)
  c.generate.classwise_subset = 1.0  # every image of the class
  return c
