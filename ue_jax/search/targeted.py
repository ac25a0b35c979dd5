"""Targeted adversarial poisons against frozen surrogates (noise.kind tap
and sep; docs/method.md).

- tap (Fowl et al., NeurIPS 2021, "Adversarial Examples Make Strong
  Poisons"): sign-gradient *descent* of each image's cross-entropy toward a
  wrong target class, (y + 1) mod K, against the generator pretrained on
  the clean images (generate.pretrain_epochs) and then frozen: BatchNorm in
  eval mode, no model steps during the search.
- sep (Chen et al., ICLR 2023, self-ensemble protection): the same
  objective averaged over `noise.sep_members` checkpoints of that
  pretraining, evenly spaced and ending at its last epoch (`member_epochs`),
  target (y + K/2) mod K.

`noise.target_shift` (0: the method's own) sets the shift of the target
mapping y -> (y + shift) mod K, a derangement for any shift not a multiple
of K. The search never steps the generator's model (generate.train_steps
= 0, checked), so its optimizer slot is free: sep keeps its checkpoints
there, stacked on a leading axis (`MEMBERS`), where the search's checkpoints
save them and a resumed search finds them again.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from ue_jax.core import augment as augment_lib
from ue_jax.core import losses
from ue_jax.core import noise as noise_lib
from ue_jax.core import steps as steps_lib
from ue_jax.core.state import UEState

KINDS = ("tap", "sep")
MEMBERS = "sep_members"  # the key of sep's checkpoints in state.opt_state


def shift_for(kind: str, num_classes: int, shift: int = 0) -> int:
  """The target shift: `shift` if given, else the method's (tap: 1, as
  TAP's label permutation; sep: K // 2, as SEP's (y + 5) mod 10 and
  (y + 50) mod 100)."""
  if shift:
    return shift
  if kind not in KINDS:
    raise ValueError(f"unknown targeted noise kind {kind!r}")
  return 1 if kind == "tap" else num_classes // 2


def target_labels(labels: jax.Array, num_classes: int,
                  shift: int) -> jax.Array:
  """Each example's target class, (label + shift) mod num_classes."""
  return (labels + shift) % num_classes


def member_epochs(epochs: int, members: int) -> Sequence[int]:
  """The pretraining epochs (1-based) whose end states form sep's ensemble:
  `members` of the `epochs`, evenly spaced and the last one included,
  epochs - floor(j * epochs / members) for j < members (SEP's choice, e.g.
  every 4th of 120 for 30 members)."""
  if not 1 <= members <= epochs:
    raise ValueError(f"{members} members from {epochs} epochs")
  return tuple(sorted(epochs - (j * epochs) // members
                      for j in range(members)))


def ensemble_loss(apply_fn, members, images: jax.Array, targets: jax.Array,
                  mask: jax.Array) -> jax.Array:
  """The mean over the ensemble `members` (model variables stacked on a
  leading axis) of each member's cross-entropy toward `targets`, summed
  over the valid rows (eval mode). Its gradient in `images` is the mean of
  the members' gradients, taken one member at a time in a scan, so memory
  does not grow with the ensemble (the scan is unrolled on CPU, as
  noise.pgd's steps, where convolutions in a rolled loop are slow). An
  ensemble of one is that model's loss, with no loop."""
  count = jax.tree.leaves(members)[0].shape[0]

  def member_loss(x, variables):
    logits = apply_fn(variables, x, train=False)
    return losses.summed_cross_entropy(logits, targets, mask)

  if count == 1:
    return member_loss(images, jax.tree.map(lambda v: v[0], members))

  def mean_loss(x):
    return jnp.mean(jax.lax.map(functools.partial(member_loss, x), members))

  def forward(x):
    def add(carry, variables):
      loss, grad = jax.value_and_grad(member_loss)(x, variables)
      return (carry[0] + loss, carry[1] + grad), None
    (loss, grad), _ = jax.lax.scan(
        add, (jnp.zeros((), jnp.float32), jnp.zeros_like(x)), members,
        unroll=noise_lib.unroll_length(count))
    return loss / count, grad / count

  loss_fn = jax.custom_vjp(mean_loss)
  loss_fn.defvjp(forward, lambda grad, cotangent: (cotangent * grad,))
  return loss_fn(images)


def members_of(state: UEState, *, ensemble: bool):
  """The surrogates a noise step attacks, stacked: sep's checkpoints
  (`ensemble`), else the state's own model as an ensemble of one."""
  if ensemble:
    return state.opt_state[MEMBERS]
  return jax.tree.map(lambda v: v[None], state.variables)


def with_member_slots(state: UEState, count: int) -> UEState:
  """`state` whose optimizer slot holds `count` copies of its variables:
  the shape of sep's ensemble, for a fresh state and for the template a
  checkpoint is restored into."""
  return state.replace(opt_state={MEMBERS: jax.tree.map(
      lambda v: jnp.broadcast_to(v, (count, *v.shape)), state.variables)})


def noise_step(state: UEState, batch, *, eps: float, step_size: float,
               num_steps: int, num_classes: int, shift: int,
               ensemble: bool = False, layout: str = "samplewise",
               codec: noise_lib.Codec = noise_lib.FLOAT32,
               eot_augment: str = "none", eot_samples: int = 1,
               pad: int = 4):
  """`num_steps` signed-gradient steps that lower `ensemble_loss` toward
  each example's target class (target_labels) against the frozen
  surrogates (members_of), from the batch's stored noise, projected on the
  eps-ball and on [0, 1]; written back as steps.noise_step does (sample-wise
  rows, or the class-wise clipped mean). With `eot_augment`, each step
  follows the loss averaged over `eot_samples` fresh draws of that
  augmentation (TAP's differentiable crop and flip), drawn from the state's
  rng and the batch's first row. The model never steps here, so every
  call advances the rng instead: each round draws afresh (a resumed run
  restores it with the state)."""
  x = noise_lib.to_float(batch["image"])
  labels, mask = batch["label"], batch["mask"]
  targets = target_labels(labels, num_classes, shift)
  members = members_of(state, ensemble=ensemble)

  def loss_fn(images):
    return ensemble_loss(state.apply_fn, members, images, targets, mask)

  start = steps_lib.batch_noise(state, batch, layout=layout, codec=codec)
  if eot_augment == "none":
    delta = noise_lib.pgd(loss_fn, x, start, eps=eps, step_size=step_size,
                          num_steps=num_steps)
  else:
    def eot_loss(images, key):
      def one_draw(k):
        return loss_fn(augment_lib.augment(k, images, kind=eot_augment,
                                           pad=pad))
      return jnp.mean(jax.vmap(one_draw)(jax.random.split(key, eot_samples)))

    key = jax.random.fold_in(state.rng, batch["index"][0])
    delta = noise_lib.pgd_eot(eot_loss, x, start, key, eps=eps,
                              step_size=step_size, num_steps=num_steps)
  if noise_lib.samplewise(layout):
    noise = steps_lib.scatter_rows(state.noise, batch["index"],
                                   codec.encode(delta))
  else:
    noise = codec.encode(noise_lib.class_mean(
        codec.decode(state.noise), delta, labels, mask, eps=eps))
  return state.replace(noise=noise, rng=jax.random.fold_in(state.rng, 1)), {}


def bound_noise_step(cfg, num_classes: int, codec: noise_lib.Codec):
  """The config's targeted noise step with its hyperparameters bound, not
  jitted (generate.build jits it over the mesh)."""
  n = cfg.noise
  return functools.partial(
      noise_step, eps=n.eps, step_size=n.step_size, num_steps=n.num_steps,
      num_classes=num_classes,
      shift=shift_for(n.kind, num_classes, n.target_shift),
      ensemble=n.kind == "sep", layout=n.layout, codec=codec,
      eot_augment=n.eot_augment, eot_samples=n.eot_samples)


class Snapshots:
  """sep's ensemble, collected during the pretraining: called by train.fit
  at every epoch's end (baselines.pretrain's `snapshot`), it keeps a copy of
  the variables of the epochs in `member_epochs`; `install` stacks them into
  the search state's optimizer slot."""

  def __init__(self, epochs: int, members: int, sharding):
    self.epochs = set(member_epochs(epochs, members))
    self.sharding, self.kept = sharding, []

  def __call__(self, epoch: int, state: UEState):
    if epoch in self.epochs:  # copied: the next step donates the state
      self.kept.append(jax.tree.map(jnp.copy, state.variables))

  def install(self, state: UEState) -> UEState:
    if len(self.kept) != len(self.epochs):
      raise ValueError(f"kept {len(self.kept)} of {len(self.epochs)} "
                       "ensemble members")
    stack = jax.jit(lambda *trees: jax.tree.map(
        lambda *leaves: jnp.stack(leaves), *trees),
                    out_shardings=self.sharding)
    members = stack(*self.kept)
    self.kept = []
    return state.replace(opt_state={MEMBERS: members})
