"""One training step under a defense: a keyed batch transform (defenses.py),
optionally several augmented copies trained on their largest loss
(UEraser-style), optionally adversarial training (an error-maximizing PGD
inner step, core/noise.pgd with maximize=True). Soft-label cross-entropy,
so mixing defenses train on their mixed labels. Plain data (state.noise is
None); jitted by the driver over the mesh (sharding.Placement.jit_step).
"""

import jax
import jax.numpy as jnp

from ue_jax.core import losses
from ue_jax.core import noise as noise_lib
from ue_jax.core import steps as steps_lib
from ue_jax.core.state import UEState


def soft_cross_entropy(logits, targets):
  """Per-example cross-entropy against soft targets (rows sum to one)."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)


def adversarial(loss_fn, key, x, *, eps: float, steps: int,
                step_size: float):
  """x moved by error-MAXIMIZING PGD from a uniform random start in the
  eps-ball: the inner step of PGD adversarial training (Madry et al.)."""
  start = jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)
  delta = noise_lib.pgd(loss_fn, x, start, eps=eps, step_size=step_size,
                        num_steps=steps, maximize=True)
  return noise_lib.perturb(x, delta)


def defended_step(state: UEState, batch, *, transform, num_classes: int,
                  copies: int = 1, adv_eps: float = 0.0, adv_steps: int = 0):
  """One optimizer step; `transform(key, x, y) -> (x, y)` (soft labels).
  With copies > 1 each example's loss is the largest over `copies`
  independently transformed copies. With adv_steps > 0 each (transformed)
  batch is first attacked within L-inf radius adv_eps, step size
  2.5 * adv_eps / adv_steps, BatchNorm in train mode (its updates from the
  attack are discarded)."""
  x = noise_lib.to_float(batch["image"])
  y = jax.nn.one_hot(batch["label"], num_classes)
  rng = jax.random.fold_in(state.rng, state.step)
  keys = jax.random.split(rng, copies + 1)
  xs, ys = jax.vmap(lambda k: transform(k, x, y))(keys[:copies])
  # Example-major rows (example i's copies at rows i * copies + c), so
  # that the batch keeps its row sharding: copy-major rows would need the
  # whole batch on every device.
  b = x.shape[0]
  xs = jnp.swapaxes(xs, 0, 1).reshape(b * copies, *x.shape[1:])
  ys = jnp.swapaxes(ys, 0, 1).reshape(b * copies, num_classes)

  def forward(params, images):
    return state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                          images, train=True, mutable=["batch_stats"])

  if adv_steps > 0:
    def attack_loss(images):
      return jnp.sum(soft_cross_entropy(forward(state.params, images)[0], ys))
    xs = jax.lax.stop_gradient(adversarial(
        attack_loss, keys[copies], xs, eps=adv_eps, steps=adv_steps,
        step_size=2.5 * adv_eps / adv_steps))

  def loss_fn(params):
    logits, updates = forward(params, xs)
    per_example = soft_cross_entropy(logits, ys).reshape(b, copies)
    return jnp.mean(jnp.max(per_example, axis=1)), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  first = slice(None, None, copies)  # each example's first copy
  labels = jnp.argmax(ys[first], axis=-1)
  metrics = {"loss": loss,
             "accuracy": losses.correct(logits[first], labels) / b}
  new_state = steps_lib.apply_gradients(state, grads, updates["batch_stats"])
  return new_state, metrics
