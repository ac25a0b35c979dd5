"""Sample-wise error-minimizing noise on real Fashion-MNIST, sized for 2 CPU cores.

The README's quick start. Offline once Debian's `dataset-fashion-mnist` is
installed (the IDX files in /usr/share/datasets/fashion-mnist).

  python -m ue_jax.main --config=configs/fashion_mnist_samplewise.py \
      --workdir=runs/fmnist

Generator and learner: the CIFAR ResNet-18 at width 16 (channels
16/32/64/128) on a seeded class-stratified subset of 4000 images; eps = 16/255.
Measured figures: docs/results.md (rounds, time,
accuracies, and why one-channel data resists this method).
"""

from configs import common


def get_config():
  c = common.base()
  c.name = "fashion_mnist_samplewise"
  c.data.name = "fashion_mnist"
  c.data.source = "idx"
  c.data.train_size = 4000
  c.data.test_size = 10000
  c.model.name = "resnet18"
  c.model.width = 16
  c.noise.eps = 16 / 255
  c.noise.step_size = 1.6 / 255
  c.noise.num_steps = 20
  c.generate.batch_size = 256
  c.generate.train_steps = 10
  # The IDX files are stored in a mixed class order, and every figure
  # measured with this config (docs/results.md) walked it as
  # stored (the original's unshuffled loader); the configs that extend this
  # one inherit it. common.base() walks a shuffled order.
  c.generate.model_order = "stored"
  c.generate.max_rounds = 8
  c.evaluate.epochs = 20
  c.evaluate.augment = "crop"
  c.evaluate.lr = 0.1
  return c
