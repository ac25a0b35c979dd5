"""model.compute_dtype: bfloat16 compute against float32, measured.

Parameters, optimizer state, batch statistics, logits and the noise stay
float32 in both; only the layers' arithmetic changes. The tolerances below
were measured on the CPU (XLA:CPU, JAX 0.10) on the CIFAR ResNet-18 at
width 8, 32 random 32x32x3 images, 10 classes, one float32 init shared by
both (docs/operations.md, "bfloat16 compute"), measured -> bound:
- forward (eval mode): logits relative L2 error 0.0013 -> 0.01; argmax
  agreement 1.0 -> 0.9;
- one model step (train mode, SGD 0.1 / momentum 0.9 / clip 5): cosine of
  the parameter updates 0.96 -> 0.9; loss difference 0.001 -> 0.01;
- one noise step (K = 10 PGD steps of 0.8/255, eps 8/255): the loss
  decrease the bfloat16 noise buys, scored by the float32 model, 1.00 of the
  float32 noise's -> [0.7, 1.3]; every value within eps; the noise's signs
  agree on 0.96 of the pixels -> 0.8 (a signed-gradient step follows the
  sign of near-zero gradients, which bfloat16 rounding can flip).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest
from absl.testing import parameterized

from configs import test_tiny
from ue_jax.core import optim
from ue_jax.core import steps
from ue_jax.core.state import create_state
from ue_jax.io import data as data_lib
from ue_jax.models import MODELS
from ue_jax.models import get_model
from ue_jax.config import checks
from ue_jax.runtime.errors import UEError

EPS = 8 / 255


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x, np.float64))
                         for x in jax.tree.leaves(tree)])


def _cosine(a, b) -> float:
  return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _steps(state, batch, *, num_steps):
  """One model step, one noise step (both from `state`) and the logits of
  the clean batch, in one program (one compilation)."""
  stepped, metrics = steps.model_step(state, batch)
  noised, _ = steps.noise_step(state, batch, eps=EPS, step_size=0.8 / 255,
                               num_steps=num_steps)
  logits = state.apply_fn(state.variables,
                          steps.noise_lib.to_float(batch["image"]),
                          train=False)
  return stepped, metrics, noised, logits


def _mean_loss(state, batch, noise):
  """Mean cross-entropy of the frozen model on clip(x + noise)."""
  x = steps.noise_lib.perturb(steps.noise_lib.to_float(batch["image"]), noise)
  logits = state.apply_fn(state.variables, x, train=False)
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["label"]).mean()


def measure(width=8, n=32, num_steps=10):
  """The float32-vs-bfloat16 figures of the module docstring."""
  rng = np.random.default_rng(0)
  ds = data_lib.make_dataset(
      rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
      rng.integers(0, 10, n), 10)
  batch = data_lib.gather(ds, np.arange(n))
  runs = {}
  for dtype in ("float32", "bfloat16"):
    model = get_model("resnet18", num_classes=10, width=width, dtype=dtype)
    tx = optim.sgd(0.1, momentum=0.9, weight_decay=5e-4, grad_clip=5.0)
    state = create_state(model, tx, seed=0, image_shape=(32, 32, 3),
                         noise_shape=ds.images.shape)
    stepped, metrics, noised, logits = jax.jit(functools.partial(
        _steps, num_steps=num_steps))(state, batch)
    runs[dtype] = dict(state=state, stepped=stepped, metrics=metrics,
                       noise=np.asarray(noised.noise), logits=np.asarray(
                           logits))
  f32, b16 = runs["float32"], runs["bfloat16"]
  start = _flat(f32["state"].params)
  losses = jax.jit(jax.vmap(_mean_loss, in_axes=(None, None, 0)))(
      f32["state"], batch, jnp.stack([jnp.zeros_like(f32["noise"]),
                                      f32["noise"], b16["noise"]]))
  gain = {"float32": float(losses[0] - losses[1]),
          "bfloat16": float(losses[0] - losses[2])}
  return {
      "same_init": all(np.array_equal(a, b) for a, b in zip(
          jax.tree.leaves(f32["state"].params),
          jax.tree.leaves(b16["state"].params))),
      "dtypes": {k: sorted({str(x.dtype) for x in jax.tree.leaves(
          (r["stepped"].params, r["stepped"].batch_stats,
           r["stepped"].opt_state, r["noise"], r["logits"]))})
                 for k, r in runs.items()},
      "logits_rel_err": float(np.linalg.norm(b16["logits"] - f32["logits"])
                              / np.linalg.norm(f32["logits"])),
      "argmax_agree": float(np.mean(b16["logits"].argmax(1)
                                    == f32["logits"].argmax(1))),
      "update_cosine": _cosine(_flat(b16["stepped"].params) - start,
                               _flat(f32["stepped"].params) - start),
      "loss_diff": abs(float(b16["metrics"]["loss"])
                       - float(f32["metrics"]["loss"])),
      "noise_gain_ratio": gain["bfloat16"] / gain["float32"],
      "noise_max_abs": max(float(np.abs(r["noise"]).max())
                           for r in runs.values()),
      "noise_sign_agree": float(np.mean(np.sign(b16["noise"])
                                        == np.sign(f32["noise"]))),
  }


class ComputeDtypeTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.m = measure()

  def test_parameters_and_noise_stay_float32(self):
    self.assertTrue(self.m["same_init"])
    self.assertEqual(self.m["dtypes"], {"float32": ["float32"],
                                        "bfloat16": ["float32"]})

  def test_model_step_matches_float32(self):
    self.assertLess(self.m["logits_rel_err"], 0.01, self.m)
    self.assertGreaterEqual(self.m["argmax_agree"], 0.9, self.m)
    self.assertGreater(self.m["update_cosine"], 0.9, self.m)
    self.assertLess(self.m["loss_diff"], 0.01, self.m)

  def test_noise_step_matches_float32(self):
    self.assertBetween(self.m["noise_gain_ratio"], 0.7, 1.3)
    self.assertLessEqual(self.m["noise_max_abs"], EPS + 1e-6)
    self.assertGreater(self.m["noise_sign_agree"], 0.8, self.m)

  @parameterized.parameters(*sorted(MODELS))
  def test_every_model_takes_the_dtype(self, name):
    model = get_model(name, num_classes=3, width=4, dtype="bfloat16")
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x,
                                                  train=False))
    self.assertEqual({v.dtype for v in jax.tree.leaves(variables)},
                     {jnp.dtype(jnp.float32)})
    out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    self.assertEqual(out.dtype, jnp.float32)

  def test_config_field_is_validated(self):
    cfg = test_tiny.get_config()
    cfg.data.train_path = cfg.data.test_path = "x.npz"
    cfg.model.compute_dtype = "bfloat16"
    checks.check_config(cfg)
    cfg.model.compute_dtype = "float16"
    with self.assertRaisesRegex(UEError, "model.compute_dtype must be one of "
                                "'float32', 'bfloat16', got 'float16'"):
      checks.check_config(cfg)
    with self.assertRaisesRegex(UEError, "unknown compute dtype"):
      get_model("resnet18", num_classes=3, width=4, dtype="float16")


if __name__ == "__main__":
  absltest.main()
