"""Sample-wise error-minimizing noise on SVHN: the paper's settings.

Noise [73257,32,32,3] (the SVHN train split, no extra): eps = 8/255, step
0.8/255, K = 20, M = 10, batch 512, zeros init, SGD 0.1 / momentum 0.9 /
wd 5e-4 / clip 5 at a constant rate, stop at 99 % accuracy on the released
training images (docs/method.md §2). Evaluation (§6): ResNet-18 for 30 epochs,
batch 128, cosine, wd 5e-4, no augmentation, last-epoch clean test accuracy.

Paper (Table 1, ResNet-18): 8.22 % after training on the unlearnable
release against 96.02 % on clean SVHN.

Run on an accelerator (data via TFDS, dataset `svhn_cropped`):

  pip install -e '.[data]'
  python -m ue_jax.main --config=configs/svhn_samplewise.py \
      --workdir=runs/svhn_samplewise --config.data.download=True

Cost: about 1.5x configs/cifar10_samplewise.py per round (73 257 images),
plus 2 x 30 training epochs. Not yet measured.
"""

from configs import common


def get_config():
  c = common.base()
  c.name = "svhn_samplewise"
  c.data.name = "svhn_cropped"
  c.data.source = "tfds"
  c.model.name = "resnet18"
  c.model.width = 64
  c.evaluate.epochs = 30
  c.evaluate.augment = "none"
  return c
