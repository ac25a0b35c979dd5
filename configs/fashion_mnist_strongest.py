"""The strongest imperceptible protection measured for one-channel data:
linearly separable patches (LSP) on real Fashion-MNIST, eps = 16/255, no
generator training.

Every training image gets a point of its class's cluster (a random vertex
of a hypercube of side 20 plus unit Gaussian noise), one value per 8x8
block of pixels, scaled to the L2 norm eps * sqrt(28 * 28) and clipped to
the L-inf ball of 16/255 (core/shortcuts.py). Same data, learner and recipe
as configs/fashion_mnist_samplewise.py, so the rows compare directly; the
learner is not trained on the clean images here (the quick start's
clean-trained accuracy, 0.868, is that of this recipe).

  python -m ue_jax.main --config=configs/fashion_mnist_strongest.py \
      --workdir=runs/fm_strongest

Measured (2 CPU cores shared with other jobs, docs/methods.md): generation
3.0 s (no model); mean |pixel change| 12.1/255, max 16/255; the standard
learner (ResNet-18 width 16, 20 epochs, crops) trained on the release scores
0.177 on the clean test images (0.147-0.335 over the 20 epochs; training
accuracy on the release 0.9997); evaluation took about 11 minutes. The
small CNN learner trained on an LSP release of the same recipe scores 0.331.
Against a reduced battery (5 epochs, docs/methods.md) the ResNet-18's best
epoch reaches 0.549, and JPEG 10, mixup, UEraser-style augmentation or
adversarial training leave the small CNN within 2-5 points of its clean
accuracy: it is not unlearnable for every learner and defense.
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
