"""Model-free protection for one-channel data: class-wise autoregressive (AR)
noise on real Fashion-MNIST, eps = 16/255, no generator training.

Every training image gets a fresh sample of its class's 3x3 autoregressive
process (core/shortcuts.py), scaled to the L2 norm 3.5 (about twice
eps * sqrt(28 * 28)) and clipped to the L-inf ball of 16/255. Same data,
learner and recipe as configs/fashion_mnist_samplewise.py, so the rows
compare directly; the learner is not trained on the clean images here (the
quick start's clean-trained row is this recipe's).

  python -m ue_jax.main --config=configs/fashion_mnist_ar.py \
      --workdir=runs/fm_ar

Measured figures: docs/results.md ("Every method, measured the same way").
"""

from configs import fashion_mnist_samplewise


def get_config():
  c = fashion_mnist_samplewise.get_config()
  c.name = "fashion_mnist_ar"
  c.noise.kind = "ar"
  c.noise.layout = "samplewise"
  c.noise.ar_norm = "l2"
  # About twice eps * sqrt(28 * 28), then clipped to eps: 60 % of the
  # pixels at +-eps, mean |delta| 0.79 eps (the AR paper's L2 scale,
  # eps * sqrt(H W), leaves 30 % at +-eps and mean |delta| 0.62 eps).
  c.noise.ar_l2_eps = 3.5
  c.evaluate.train_clean = False
  return c
