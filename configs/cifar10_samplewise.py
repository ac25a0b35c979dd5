"""Sample-wise error-minimizing noise on CIFAR-10: the paper's settings.

Generator and learner: CIFAR ResNet-18 (width 64). Noise: eps = 8/255,
step 0.8/255, K = 20 PGD steps, M = 10 model steps per round, batch 512, SGD
0.1 / momentum 0.9 / wd 5e-4 / clip 5 at a constant rate, zeros init, stop at
99 % accuracy on the released training images (docs/method.md §2, §10).
Evaluation: ResNet-18 for 60 epochs, batch 128, cosine schedule, random crop
with padding 4 and horizontal flip, last-epoch clean test accuracy (§6).

Paper (Table 1, ResNet-18): 19.93 % after training on the unlearnable
release against 94.77 % on clean CIFAR-10; the authors' QuickStart reached
23.60 % after 30 epochs, with the search stopping after 10 rounds.

Run on an accelerator (data via TFDS, so install the extra once):

  pip install -e '.[data]'
  python -m ue_jax.main --config=configs/cifar10_samplewise.py \
      --workdir=runs/cifar10_samplewise --config.data.download=True

Cost: about 200 epochs-equivalent of ResNet-18 forward/backward passes for
generation (10 rounds x 20 PGD steps over 50k images) plus 2 x 60 training
epochs. The full run has not been measured: it needs an accelerator (on 2
CPU cores one round would take hours: docs/operations.md).
tests/tfds_test.py runs this config's code path end to end on TFDS mock data
at this model size, with a few images and steps.
"""

from configs import common


def get_config():
  c = common.base()
  c.name = "cifar10_samplewise"
  c.data.name = "cifar10"
  c.data.source = "tfds"
  c.model.name = "resnet18"
  c.model.width = 64
  c.evaluate.epochs = 60
  c.evaluate.augment = "crop_flip"
  return c
