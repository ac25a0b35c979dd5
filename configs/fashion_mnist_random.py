"""Random-noise baseline (sample-wise) on real Fashion-MNIST, 2 CPU cores.

Every training image gets its own delta ~ U(-eps, eps), eps = 16/255 (the
original's `--attack_type random`, docs/method.md §4); no model is involved in
generation. Same data, learner and recipe as configs/fashion_mnist_samplewise.py,
so the row compares directly; the paper expects random noise to leave
accuracy close to clean.

  python -m ue_jax.main --config=configs/fashion_mnist_random.py \
      --workdir=runs/fm_random

Measured figures: docs/results.md.
"""

from configs import fashion_mnist_samplewise


def get_config():
  c = fashion_mnist_samplewise.get_config()
  c.name = "fashion_mnist_random"
  c.noise.kind = "random"
  c.noise.layout = "samplewise"
  return c
