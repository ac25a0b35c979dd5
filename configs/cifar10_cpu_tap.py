"""Targeted adversarial poisons (TAP) on real CIFAR-10, sized for 2 CPU cores.

Fowl et al. (NeurIPS 2021), "Adversarial Examples Make Strong Poisons", class
targeted (ue_jax/search/targeted.py, docs/method.md): the generator (the
width-16 ResNet-18) is first trained on the clean images for 40 epochs with
the evaluation recipe (TAP's surrogate trains 40), then frozen (BatchNorm in
eval mode, no model steps) while 250 signed-gradient steps of 0.4/255
(0.05 eps) lower each image's cross-entropy toward the class (y + 1) mod 10,
eps = 8/255, from N(0, eps^2) clipped to eps, each step through a fresh
random crop and flip (TAP's differentiable augmentation). The steps run as
10 rounds of K = 25 (the same 250 steps per image: XLA:CPU copies every step
of a round into the program, and 250 took minutes to compile); the noise is
released whatever the surrogate's accuracy on it. Data and learner as
configs/cifar10_cpu_samplewise.py:

  python -m ue_jax.main --config=configs/cifar10_cpu_tap.py \
      --workdir=runs/c10_tap --config.data.path=CIFAR10_TREE_OR_TAR

Measured figures: docs/results.md.
"""

from configs import cifar10_cpu_samplewise


def get_config():
  c = cifar10_cpu_samplewise.get_config()
  c.name = "cifar10_cpu_tap"
  c.noise.kind = "tap"
  c.noise.num_steps = 25
  c.noise.step_size = 0.4 / 255
  c.noise.init = "normal"
  c.noise.eot_augment = "crop_flip"
  c.generate.pretrain_epochs = 40
  c.generate.train_steps = 0
  c.generate.min_rounds = c.generate.max_rounds = 10
  return c
