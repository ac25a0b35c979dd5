"""Sample-wise error-minimizing noise on CIFAR-100: the paper's settings.

Noise [50000,32,32,3]: eps = 8/255, step 0.8/255, K = 20, M = 20 model steps
per round (CIFAR-100's script value), batch 512, zeros init, stop at 99 %
accuracy on the released training images (docs/method.md §2). The generator's
optimizer comes from the CIFAR-100 yaml: SGD 0.1 / momentum 0.9 / wd 5e-5 /
clip 5, constant rate. Evaluation (§6): ResNet-18 for 100 epochs, batch 128,
cosine, wd 5e-5, random crop (padding 4) + flip + rotation up to 20 degrees,
last-epoch clean test accuracy.

Paper (Table 1, ResNet-18): 14.81 % after training on the unlearnable
release against 70.96 % on clean CIFAR-100.

Run on an accelerator (data via TFDS):

  pip install -e '.[data]'
  python -m ue_jax.main --config=configs/cifar100_samplewise.py \
      --workdir=runs/cifar100_samplewise --config.data.download=True

Cost: like configs/cifar10_samplewise.py per round (20 input-gradient passes
over 50 000 images), plus 2 x 100 training epochs. Not yet measured.
"""

from configs import common


def get_config():
  c = common.base()
  c.name = "cifar100_samplewise"
  c.data.name = "cifar100"
  c.data.source = "tfds"
  c.model.name = "resnet18"
  c.model.width = 64
  c.generate.train_steps = 20
  c.generate.weight_decay = 5e-5
  c.evaluate.epochs = 100
  c.evaluate.weight_decay = 5e-5
  c.evaluate.augment = "crop_flip_rotate"
  return c
