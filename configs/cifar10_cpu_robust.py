"""Robust sample-wise error-minimizing noise on real CIFAR-10, 2 CPU cores.

configs/cifar10_cpu_samplewise.py (5000 stratified training images, all
10000 test images, width-16 ResNet-18 generator and learner, the paper's
eps 8/255, step 0.8/255, K = 20, M = 10, batch 512, 30 learner epochs with
crop + flip) with the search made to survive the trainer's grayscale
conversion and JPEG compression:

- every PGD step descends the loss averaged over 2 draws of the "pool"
  augmentation (each image one of crop + flip, random grayscale, JPEG at a
  quality drawn from 10/30/50/75, or AUE's strong augmentation;
  core/augment.py), and the generator's model steps train on the same pool
  applied to the perturbed images (AUE: the surrogate learns through the
  augmentations the noise must survive);
- the noise is of form "luma_lowfreq" (core/noise.py FORMS): one value per
  4 x 4 pixel block, the same in all three channels, so a grayscale
  conversion keeps it exactly (the BT.601 weights sum to 1) and its energy
  sits in the low frequencies JPEG quantizes least.

  python -m ue_jax.main --config=configs/cifar10_cpu_robust.py \
      --workdir=runs/c10_robust --config.data.path=CIFAR10_TREE_OR_TAR

Measured figures: docs/results.md (robust search).
"""

from configs import cifar10_cpu_samplewise


def get_config():
  c = cifar10_cpu_samplewise.get_config()
  c.name = "cifar10_cpu_robust"
  c.noise.eot_augment = "pool"
  c.noise.eot_samples = 2
  c.noise.form = "luma_lowfreq"
  c.noise.form_block = 4
  c.generate.augment = "pool"
  return c
