"""Class-wise error-minimizing noise on real CIFAR-10, sized for 2 CPU cores.

Data, generator, learner and recipe as configs/cifar10_cpu_samplewise.py
(5000 stratified training images, all 10000 test images, width-16
ResNet-18, 30 learner epochs); the noise is one perturbation per class
([10,32,32,3]) searched as the original's class-wise search: K = 1 signed
step of 0.8/255 per example from its class noise, each class set to the
clipped mean of its examples' results, fitted and stop-tested on a seeded
stratified 20 % subset (1000 images) while the generator trains on all 5000
(M = 10 steps per round, batch 512); stop at 99 % accuracy on the subset's
released images, at most 50 rounds.

  python -m ue_jax.main --config=configs/cifar10_cpu_classwise.py \
      --workdir=runs/c10_classwise --config.data.path=CIFAR10_TREE_OR_TAR

Measured figures: docs/results.md.
"""

from configs import cifar10_cpu_samplewise
from configs import common


def get_config():
  c = cifar10_cpu_samplewise.get_config()
  c.name = "cifar10_cpu_classwise"
  common.classwise(c)
  return c
