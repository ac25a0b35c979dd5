"""The strongest imperceptible protection found for one-channel data:
class-wise autoregressive (AR) noise on real Fashion-MNIST, eps = 16/255.

Every training image gets a fresh sample of its class's 3x3 autoregressive
process (core/shortcuts.py), scaled to the L2 norm 3.5 (about 2 eps * sqrt(28 * 28)) and
clipped to the L-inf ball of 16/255; no model is trained to make it. Same
data, learner and recipe as configs/fashion_mnist_samplewise.py, so the rows
compare directly.

  python -m ue_jax.main --config=configs/fashion_mnist_strongest.py \
      --workdir=runs/fm_strongest

Measured: see docs/methods.md.
"""

from configs import fashion_mnist_samplewise


def get_config():
  c = fashion_mnist_samplewise.get_config()
  c.name = "fashion_mnist_strongest"
  c.noise.kind = "ar"
  c.noise.layout = "samplewise"
  c.noise.ar_norm = "l2"
  # Twice eps * sqrt(28 * 28), then clipped to eps: 60 % of the pixels
  # at +-eps, mean |delta| 0.79 eps (the AR paper's L2 scale, 1 eps * sqrt,
  # leaves 30 % at +-eps and mean |delta| 0.62 eps).
  c.noise.ar_l2_eps = 3.5
  # The clean-trained accuracy of this learner recipe on these images is
  # the quick start's (configs/fashion_mnist_samplewise.py); not retrained.
  c.evaluate.train_clean = False
  return c
