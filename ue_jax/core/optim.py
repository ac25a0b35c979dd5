"""The original's SGD: clip-by-norm, coupled weight decay on all params, momentum.

optax equivalent of PyTorch `clip_grad_norm_(5)` then `SGD(lr, momentum=0.9,
weight_decay=wd)`: the clip acts on the raw loss gradient, before decay.
"""

import math

import jax.numpy as jnp
import optax


def sgd(learning_rate, *, momentum: float, weight_decay: float,
        grad_clip: float) -> optax.GradientTransformation:
  parts = []
  if grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if weight_decay > 0:
    parts.append(optax.add_decayed_weights(weight_decay))
  if momentum > 0:
    parts.append(optax.trace(decay=momentum))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*parts)


def recipe(base_lr: float, *, epochs: int, steps_per_epoch: int,
           momentum: float, weight_decay: float,
           grad_clip: float) -> optax.GradientTransformation:
  """The original's training recipe: `sgd` with `epoch_cosine` from
  `base_lr` over `epochs` of `steps_per_epoch` steps."""
  return sgd(epoch_cosine(base_lr, epochs=epochs,
                          steps_per_epoch=steps_per_epoch),
             momentum=momentum, weight_decay=weight_decay,
             grad_clip=grad_clip)


def epoch_cosine(base_lr: float, *, epochs: int, steps_per_epoch: int):
  """PyTorch CosineAnnealingLR(T_max=epochs) stepped once per epoch:
  lr_e = base/2 * (1 + cos(pi e / epochs)), constant within epoch e."""
  def schedule(step):
    epoch = jnp.floor_divide(step, steps_per_epoch)
    return 0.5 * base_lr * (1.0 + jnp.cos(math.pi * epoch / epochs))
  return schedule
