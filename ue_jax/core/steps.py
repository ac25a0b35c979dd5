"""Pure step functions of the min-min objective; jitted by the drivers.

- `model_step`: one SGD step on clip(x + delta), BatchNorm in train mode.
  Touches only step/params/batch_stats/opt_state.
- `noise_step`: K sign-gradient *descent* steps (ascent with `maximize`)
  on the batch's noise, BatchNorm in eval mode. Touches only `noise`.

`layout` (static) says how the noise is indexed: "samplewise" noise
[N,H,W,C] by the example's `index`, "classwise" noise [classes,H,W,C] by its
`label`; a class-wise noise step sets each class present in the batch to the
clipped mean of its examples' PGD results (docs/method.md §3).
- `eval_step`: counts of correct predictions, summed loss and the confusion
  matrix (eval mode), optionally on the released (quantized) images.

`codec` (static, noise.Codec) says how the state stores the noise (float32,
bfloat16 or int8): it is decoded on every read and encoded on every write,
in either layout.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from ue_jax.core import augment as augment_lib
from ue_jax.core import losses
from ue_jax.core import noise as noise_lib
from ue_jax.core.state import UEState


LAYOUTS = ("samplewise", "classwise")


def noise_rows(state: UEState, batch, *, layout: str = "samplewise"):
  """The noise row of each batch row: its index (sample-wise) or its label
  (class-wise); padding rows (mask 0) get an out-of-range row."""
  if layout == "classwise":
    return jnp.where(batch["mask"] > 0, batch["label"], state.noise.shape[0])
  if layout != "samplewise":
    raise ValueError(f"unknown noise layout {layout!r}")
  return batch["index"]


def batch_noise(state: UEState, batch, *, layout: str = "samplewise",
                codec: noise_lib.Codec = noise_lib.FLOAT32) -> jax.Array:
  """The noise of each batch row as float32 (zeros for padding rows)."""
  return codec.decode(state.noise.at[noise_rows(state, batch, layout=layout)]
                      .get(mode="fill", fill_value=0))


def model_step(state: UEState, batch, *, augment: str = "none", pad: int = 4,
               layout: str = "samplewise",
               codec: noise_lib.Codec = noise_lib.FLOAT32):
  """One optimizer step on the (perturbed, augmented) batch."""
  x = noise_lib.to_float(batch["image"])
  if state.noise is not None:
    x = noise_lib.perturb(x, batch_noise(state, batch, layout=layout,
                                         codec=codec))
  rng = jax.random.fold_in(state.rng, state.step)
  x = augment_lib.augment(rng, x, kind=augment, pad=pad)
  labels = batch["label"]

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        mutable=["batch_stats"])
    return losses.cross_entropy(logits, labels), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  deltas, opt_state = state.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, deltas),
      batch_stats=updates["batch_stats"], opt_state=opt_state)
  metrics = {"loss": loss,
             "accuracy": losses.correct(logits, labels) / labels.shape[0]}
  return new_state, metrics


def eot_key(state: UEState, batch) -> jax.Array:
  """The augmentation key of a noise batch: the state's rng, its model step
  count and the batch's first row (so every batch of a round differs and a
  resumed run draws the same)."""
  return jax.random.fold_in(jax.random.fold_in(
      jax.random.fold_in(state.rng, 0xE07), state.step),
      batch["index"][0])


def noise_step(state: UEState, batch, *, eps: float, step_size: float,
               num_steps: int, maximize: bool = False,
               layout: str = "samplewise",
               codec: noise_lib.Codec = noise_lib.FLOAT32,
               eot_augment: str = "none", eot_samples: int = 1,
               pad: int = 4):
  """Updates the batch's noise by PGD against the frozen model: each
  example's own row (sample-wise), or each class present in the batch to the
  clipped mean of its examples' PGD results from the class noise
  (class-wise); stored through `codec` (rounded once per step).

  With `eot_augment` other than "none", every PGD step descends the loss
  averaged over `eot_samples` fresh random draws of that augmentation of
  clip(x + delta) (expectation over transformations); "none" is the
  paper's PGD, unchanged."""
  x = noise_lib.to_float(batch["image"])
  labels, mask = batch["label"], batch["mask"]

  def loss_fn(images):
    logits = state.apply_fn(state.variables, images, train=False)
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits, labels)
    return jnp.sum(per_example * mask)

  start = batch_noise(state, batch, layout=layout, codec=codec)
  if eot_augment == "none":
    delta = noise_lib.pgd(loss_fn, x, start, eps=eps, step_size=step_size,
                          num_steps=num_steps, maximize=maximize)
  else:
    def eot_loss(images, key):
      keys = jax.random.split(key, eot_samples)
      return jnp.mean(jax.vmap(lambda k: loss_fn(augment_lib.augment(
          k, images, kind=eot_augment, pad=pad)))(keys))

    delta = noise_lib.pgd_eot(eot_loss, x, start, eot_key(state, batch),
                              eps=eps, step_size=step_size,
                              num_steps=num_steps, maximize=maximize)
  if layout == "classwise":
    noise = codec.encode(noise_lib.class_mean(
        codec.decode(state.noise), delta, labels, mask, eps=eps))
  else:
    noise = state.noise.at[batch["index"]].set(codec.encode(delta),
                                               mode="drop")
  return state.replace(noise=noise), {}


def eval_step(state: UEState, batch, *, release_eps=None,
              paper_release: bool = False, layout: str = "samplewise",
              codec: noise_lib.Codec = noise_lib.FLOAT32):
  """Sums of correct predictions, loss and valid examples for a padded batch,
  and its confusion matrix (rows: true class, columns: predicted; padding
  rows count nowhere).

  With `release_eps` the batch is first released with the state's noise (the
  quantized uint8 images a user will get), which is what the stop rule tests.
  """
  images = batch["image"]
  if release_eps is not None:
    images = noise_lib.release_images(images, batch_noise(state, batch,
                                                          layout=layout,
                                                          codec=codec),
                                      eps=release_eps,
                                      paper_release=paper_release)
  logits = state.apply_fn(state.variables, noise_lib.to_float(images),
                          train=False)
  mask, labels = batch["mask"], batch["label"]
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  classes = logits.shape[-1]
  confusion = jnp.einsum("bi,bj->ij",
                         jax.nn.one_hot(labels, classes) * mask[:, None],
                         jax.nn.one_hot(jnp.argmax(logits, -1), classes))
  return {"correct": losses.correct(logits, labels, mask),
          "loss": jnp.sum(per_example * mask), "count": jnp.sum(mask),
          "confusion": confusion}


def bound_steps(*, eps: float, step_size: float, num_steps: int,
                augment: str = "none", paper_release: bool = False,
                maximize: bool = False, layout: str = "samplewise",
                codec: noise_lib.Codec = noise_lib.FLOAT32,
                eot_augment: str = "none", eot_samples: int = 1):
  """(model_step, noise_step, eval_step on the release) with their
  hyperparameters bound, not jitted (sharding.py jits them over a mesh)."""
  eot = {}
  if eot_augment != "none":  # the paper's noise step keeps its signature
    eot = dict(eot_augment=eot_augment, eot_samples=eot_samples)
  return (
      functools.partial(model_step, augment=augment, layout=layout,
                        codec=codec),
      functools.partial(noise_step, eps=eps, step_size=step_size,
                        num_steps=num_steps, maximize=maximize,
                        layout=layout, codec=codec, **eot),
      functools.partial(eval_step, release_eps=eps,
                        paper_release=paper_release, layout=layout,
                        codec=codec),
  )


def jit_steps(*, eps: float, step_size: float, num_steps: int,
              augment: str = "none", paper_release: bool = False,
              maximize: bool = False, layout: str = "samplewise"):
  """The three steps jitted with their hyperparameters bound (state donated)."""
  return (
      jit_model_step(augment=augment, layout=layout),
      jax.jit(functools.partial(noise_step, eps=eps, step_size=step_size,
                                num_steps=num_steps, maximize=maximize,
                                layout=layout), donate_argnums=0),
      jit_eval(release_eps=eps, paper_release=paper_release, layout=layout),
  )


def jit_model_step(*, augment: str = "none", layout: str = "samplewise"):
  """`model_step` jitted with its augmentation bound (state donated)."""
  return jax.jit(functools.partial(model_step, augment=augment, layout=layout),
                 donate_argnums=0)


def jit_eval(*, release_eps=None, paper_release: bool = False,
             layout: str = "samplewise"):
  """`eval_step` jitted; on clean images unless `release_eps` is given."""
  return jax.jit(functools.partial(eval_step, release_eps=release_eps,
                                   paper_release=paper_release, layout=layout))
