"""Class-wise error-minimizing noise on SVHN: the paper's settings.

Noise [10,32,32,3]: eps = 8/255, step 0.8/255, K = 1, each class's noise the
clipped mean of its examples' one-step results, fitted and stop-tested on a
seeded class-stratified 20 % subset while the generator trains on the whole
train split (M = 10, batch 512, SGD 0.1 / 0.9 / wd 5e-4 / clip 5, constant
rate); stop at 99 % on the subset's released images, at most 50 rounds
(docs/method.md §3). Evaluation: ResNet-18, 30 epochs, batch 128, cosine, no
augmentation, last epoch (§6).

Paper (Table 1, ResNet-18): 9.05 % after training on the class-wise
unlearnable release against 95.98 % on clean SVHN.

Run on an accelerator (data via TFDS, dataset `svhn_cropped`):

  pip install -e '.[data]'
  python -m ue_jax.main --config=configs/svhn_classwise.py \
      --workdir=runs/svhn_classwise --config.data.download=True

Cost: generation is cheap (one input-gradient pass over about 14 650
images per round); the 2 x 30 training epochs dominate. Not yet measured.
"""

from configs import common


def get_config():
  c = common.base()
  c.name = "svhn_classwise"
  c.data.name = "svhn_cropped"
  c.data.source = "tfds"
  c.model.name = "resnet18"
  c.model.width = 64
  common.classwise(c)
  c.evaluate.epochs = 30
  c.evaluate.augment = "none"
  return c
