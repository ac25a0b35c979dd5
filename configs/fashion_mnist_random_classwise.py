"""Random-noise baseline (class-wise) on real Fashion-MNIST, 2 CPU cores.

One delta ~ U(-eps, eps) per class, eps = 16/255, added to every image of
that class (the original's `--attack_type random --perturb_type classwise`,
docs/method.md §4). Same data, learner and recipe as
configs/fashion_mnist_samplewise.py. A fixed per-class pattern is itself a
learnable shortcut, so this baseline can lower accuracy (the paper's Fig. 1
says early stopping defeats it).

  python -m ue_jax.main --config=configs/fashion_mnist_random_classwise.py \
      --workdir=runs/fm_random_classwise

Measured figures: docs/results.md.
"""

from configs import fashion_mnist_samplewise


def get_config():
  c = fashion_mnist_samplewise.get_config()
  c.name = "fashion_mnist_random_classwise"
  c.noise.kind = "random"
  c.noise.layout = "classwise"
  return c
