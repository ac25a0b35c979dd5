"""Error-maximizing (adversarial) noise baseline on real Fashion-MNIST, 2 CPU cores.

As the original's `--attack_type min-max` (docs/method.md §4): the generator
(the same width-16 ResNet-18) is first trained on the clean images for 20
epochs with the evaluation recipe, then frozen (no model steps, M = 0) while
K = 20 signed-gradient *ascent* steps of 1.6/255 per round push every
example's loss up, eps = 16/255; stop once the frozen model's accuracy on the
released images is <= 10 % (the original's stop error 0.9), at most 5 rounds.
Same data, learner and recipe as configs/fashion_mnist_samplewise.py.

  python -m ue_jax.main --config=configs/fashion_mnist_error_max.py \
      --workdir=runs/fm_error_max

Measured figures: docs/results.md.
"""

from configs import fashion_mnist_samplewise


def get_config():
  c = fashion_mnist_samplewise.get_config()
  c.name = "fashion_mnist_error_max"
  c.noise.kind = "error_max"
  c.generate.pretrain_epochs = 20
  c.generate.train_steps = 0
  c.generate.error_max_stop_accuracy = 0.1
  c.generate.max_rounds = 5
  return c
