"""Pure step functions of the min-min objective; jitted by the drivers.

- `model_step`: one SGD step on clip(x + delta), BatchNorm in train mode.
  Touches only step/params/batch_stats/opt_state. Its loss and accuracy
  are means over the valid rows (mask 1), but BatchNorm's batch statistics
  count every row: the drivers give it full batches only
  (sharding.Placement.jit_step with `full_batches`).
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

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from ue_jax.core import augment as augment_lib
from ue_jax.core import losses
from ue_jax.core import noise as noise_lib
from ue_jax.core.state import UEState


def noise_rows(state: UEState, batch, *, layout: str = "samplewise"):
  """The noise row of each batch row: its index (sample-wise) or its label
  (class-wise); padding rows (mask 0) get an out-of-range row."""
  if layout not in noise_lib.LAYOUTS:
    raise ValueError(f"unknown noise layout {layout!r}")
  if noise_lib.samplewise(layout):
    return batch["index"]
  return jnp.where(batch["mask"] > 0, batch["label"], state.noise.shape[0])


def batch_noise(state: UEState, batch, *, layout: str = "samplewise",
                codec: noise_lib.Codec = noise_lib.FLOAT32) -> jax.Array:
  """The noise of each batch row as float32 (zeros for padding rows)."""
  return codec.decode(state.noise.at[noise_rows(state, batch, layout=layout)]
                      .get(mode="fill", fill_value=0))


def model_step(state: UEState, batch, *, augment: str = "none", pad: int = 4,
               layout: str = "samplewise",
               codec: noise_lib.Codec = noise_lib.FLOAT32,
               adv: Optional["Adversary"] = None):
  """One optimizer step on the (perturbed, augmented) batch; loss and
  accuracy over its valid rows (padding rows, mask 0, add nothing to the
  loss, but would to BatchNorm's batch statistics: feed full batches). With
  `adv` (robust error-minimizing noise), on its adversarial examples (PGD
  ascent of radius adv.radius against the model in eval mode, random
  start)."""
  x = noise_lib.to_float(batch["image"])
  if state.noise is not None:
    x = noise_lib.perturb(x, batch_noise(state, batch, layout=layout,
                                         codec=codec))
  rng = jax.random.fold_in(state.rng, state.step)
  x = augment_lib.augment(rng, x, kind=augment, pad=pad)
  labels, mask = batch["label"], batch["mask"]
  if adv is not None:
    x = adv.attack(_eval_loss(state, labels, mask), x,
                   jax.random.fold_in(rng, 0xAD7))

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        mutable=["batch_stats"])
    return losses.cross_entropy(logits, labels, mask), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  metrics = {"loss": loss,
             "accuracy": losses.correct(logits, labels, mask)
                         / jnp.maximum(jnp.sum(mask), 1.0)}
  return apply_gradients(state, grads, updates["batch_stats"]), metrics


def apply_gradients(state: UEState, grads, batch_stats) -> UEState:
  """One optimizer update of the parameters from `grads`, the new batch
  statistics, and the step counter advanced."""
  deltas, opt_state = state.tx.update(grads, state.opt_state, state.params)
  return state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, deltas),
      batch_stats=batch_stats, opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class Adversary:
  """The inner maximization of robust error-minimizing noise (REM):
  `steps` signed-gradient ascent steps of `step_size` within the L-inf
  ball of `radius` around the image (and inside [0, 1]), from a uniform
  random start. `steps=0` keeps the random start: stable error-minimizing
  noise's (SEM's) random point of the ball instead of an adversarial one.
  Frozen and hashable (a static value under jit)."""
  radius: float
  steps: int
  step_size: float

  def attack(self, loss_fn, x: jax.Array, key: jax.Array) -> jax.Array:
    """The adversarial images (no gradient flows through the search)."""
    x = jax.lax.stop_gradient(x)
    start = jax.random.uniform(key, x.shape, minval=-self.radius,
                               maxval=self.radius)
    delta = noise_lib.pgd(loss_fn, x, start, eps=self.radius,
                          step_size=self.step_size, num_steps=self.steps,
                          maximize=True)
    return jax.lax.stop_gradient(noise_lib.perturb(x, delta))


def _eval_loss(state: UEState, labels, mask):
  """Summed cross-entropy of the frozen model (eval mode) on images."""
  def loss_fn(images):
    logits = state.apply_fn(state.variables, images, train=False)
    return losses.summed_cross_entropy(logits, labels, mask)
  return loss_fn


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
               pad: int = 4, adv: Optional[Adversary] = None,
               form: str = "rgb", form_block: int = 4):
  """Updates the batch's noise by PGD against the frozen model: each
  example's own row (sample-wise), or each class present in the batch to the
  clipped mean of its examples' PGD results from the class noise
  (class-wise); stored through `codec` (rounded once per step).

  With `eot_augment` other than "none", every PGD step descends the loss
  averaged over `eot_samples` fresh random draws of that augmentation of
  clip(x + delta) (expectation over transformations); "none" is the
  paper's PGD, unchanged. With `adv` (REM), each draw's loss is taken at
  its adversarial example x_a = t(clip(x + delta)) + eta, eta found by
  `adv.attack` and held fixed (the gradient flows through t(clip(x +
  delta)) only, as REM's code does).

  `form` (noise.FORMS) keeps the noise in a subspace: the start and every
  PGD gradient are projected onto it (noise.form_projection, blocks of
  `form_block` pixels); "rgb", the paper's. A class-wise mean of arrays of
  the form is of the form."""
  x = noise_lib.to_float(batch["image"])
  labels, mask = batch["label"], batch["mask"]
  loss_fn = _eval_loss(state, labels, mask)
  start = batch_noise(state, batch, layout=layout, codec=codec)
  subspace = noise_lib.form_projection(form, form_block)
  if eot_augment == "none" and adv is None:
    delta = noise_lib.pgd(loss_fn, x, start, eps=eps, step_size=step_size,
                          num_steps=num_steps, maximize=maximize,
                          subspace=subspace)
  else:
    def one_draw(images, key):
      aug_key, adv_key = jax.random.split(key)
      seen = augment_lib.augment(aug_key, images, kind=eot_augment, pad=pad)
      if adv is not None:
        eta = adv.attack(loss_fn, seen, adv_key) - jax.lax.stop_gradient(seen)
        seen = seen + eta
      return loss_fn(seen)

    def eot_loss(images, key):
      keys = jax.random.split(key, eot_samples)
      return jnp.mean(jax.vmap(lambda k: one_draw(images, k))(keys))

    key = eot_key(state, batch)
    delta = noise_lib.pgd_eot(eot_loss, x, start, key,
                              eps=eps, step_size=step_size,
                              num_steps=num_steps, maximize=maximize,
                              subspace=subspace)
  if noise_lib.samplewise(layout):
    noise = scatter_rows(state.noise, batch["index"], codec.encode(delta))
  else:
    noise = codec.encode(noise_lib.class_mean(
        codec.decode(state.noise), delta, labels, mask, eps=eps))
  return state.replace(noise=noise), {}


def scatter_rows(table: jax.Array, index: jax.Array,
                 rows: jax.Array) -> jax.Array:
  """table with rows[i] at row index[i] (out-of-range indices dropped)."""
  return table.at[index].set(rows, mode="drop")


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
  classes = logits.shape[-1]
  confusion = jnp.einsum("bi,bj->ij",
                         jax.nn.one_hot(labels, classes) * mask[:, None],
                         jax.nn.one_hot(jnp.argmax(logits, -1), classes))
  return {"correct": losses.correct(logits, labels, mask),
          "loss": losses.summed_cross_entropy(logits, labels, mask),
          "count": jnp.sum(mask),
          "confusion": confusion}


def bound_steps(*, eps: float, step_size: float, num_steps: int,
                augment: str = "none", paper_release: bool = False,
                maximize: bool = False, layout: str = "samplewise",
                codec: noise_lib.Codec = noise_lib.FLOAT32,
                eot_augment: str = "none", eot_samples: int = 1,
                adv: Optional[Adversary] = None, form: str = "rgb",
                form_block: int = 4):
  """(model_step, noise_step, eval_step on the release) with their
  hyperparameters bound, not jitted (sharding.py jits them over a mesh)."""
  eot, robust = {}, {}
  if eot_augment != "none":  # the paper's steps keep their signature
    eot = dict(eot_augment=eot_augment, eot_samples=eot_samples)
  if form != "rgb":
    eot.update(form=form, form_block=form_block)
  if adv is not None:
    robust = dict(adv=adv)
  return (
      functools.partial(model_step, augment=augment, layout=layout,
                        codec=codec, **robust),
      functools.partial(noise_step, eps=eps, step_size=step_size,
                        num_steps=num_steps, maximize=maximize,
                        layout=layout, codec=codec, **eot, **robust),
      functools.partial(eval_step, release_eps=eps,
                        paper_release=paper_release, layout=layout,
                        codec=codec),
  )
