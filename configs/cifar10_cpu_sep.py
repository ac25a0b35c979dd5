"""Self-ensemble protection (SEP) on real CIFAR-10, sized for 2 CPU cores.

Chen et al. (ICLR 2023), "Self-Ensemble Protection: Training Checkpoints Are
Good Data Protectors", plain SEP (ue_jax/search/targeted.py,
docs/method.md): the generator (the width-16 ResNet-18) is trained on the
clean images for 40 epochs with the evaluation recipe, and the states at
the end of every 4th epoch, the last included (SEP's spacing: 30 of 120),
form a frozen ensemble of 10 (BatchNorm in eval mode); 30 signed-gradient
steps of 1/255 from the clean image lower the members' mean cross-entropy
toward the class (y + 5) mod 10, eps = 8/255, as 3 rounds of K = 10 (the
same 30 steps; fewer step copies for XLA:CPU to compile); the noise is
released whatever the ensemble's accuracy on it. Data and learner as
configs/cifar10_cpu_samplewise.py:

  python -m ue_jax.main --config=configs/cifar10_cpu_sep.py \
      --workdir=runs/c10_sep --config.data.path=CIFAR10_TREE_OR_TAR

Measured figures: docs/results.md.
"""

from configs import cifar10_cpu_samplewise


def get_config():
  c = cifar10_cpu_samplewise.get_config()
  c.name = "cifar10_cpu_sep"
  c.noise.kind = "sep"
  c.noise.num_steps = 10
  c.noise.step_size = 1 / 255
  c.noise.sep_members = 10
  c.generate.pretrain_epochs = 40
  c.generate.train_steps = 0
  c.generate.min_rounds = c.generate.max_rounds = 3
  return c
