"""The strongest protection within eps = 16/255 measured for one-channel
data: linearly separable patches (LSP) on real Fashion-MNIST, no generator
training (a change of 16/255 is visible on flat areas, configs/protect.py).

Every training image gets a point of its class's cluster (a random vertex
of a hypercube of side 20 plus unit Gaussian noise), one value per 8x8
block of pixels, scaled to the L2 norm eps * sqrt(28 * 28) and clipped to
the L-inf ball of 16/255 (core/shortcuts.py). Same data, learner and recipe
as configs/fashion_mnist_samplewise.py, so the rows compare directly; the
learner is not trained on the clean images here (the quick start's
clean-trained row is this recipe's).

  python -m ue_jax.main --config=configs/fashion_mnist_strongest.py \
      --workdir=runs/fm_strongest

Measured figures: docs/results.md ("Every method, measured the same way"),
with the learners and defenses where it does not hold.
"""

from configs import fashion_mnist_samplewise


def get_config():
  c = fashion_mnist_samplewise.get_config()
  c.name = "fashion_mnist_strongest"
  c.noise.kind = "lsp"
  c.noise.layout = "samplewise"
  c.noise.lsp_patch = 8
  c.evaluate.train_clean = False
  return c
