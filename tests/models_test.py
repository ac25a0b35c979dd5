"""Models: the CIFAR ResNet-18's size matches the original, any input size works."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn

from ue_jax.runtime.errors import UEError
from ue_jax.models import get_model
from ue_jax.models.small_cnn import max_pool_2x2


def count(params):
  return sum(x.size for x in jax.tree.leaves(params))


class ModelsTest(parameterized.TestCase):

  @parameterized.parameters(
      # (width, input shape, parameters): 11,173,962 is PyTorch's count for
      # the kuangliu ResNet18 on CIFAR-10; 701,178 the width-16 variant.
      (64, (32, 32, 3), 11_173_962),
      (16, (28, 28, 1), 701_178),
  )
  def test_resnet18_parameter_count(self, width, shape, expected):
    model = get_model("resnet18", num_classes=10, width=width)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)),
                           train=False))
    self.assertEqual(count(shapes["params"]), expected)

  @parameterized.parameters("resnet18", "small_cnn", "small_cnn_avg")
  def test_logits_shape_and_batchnorm_modes(self, name):
    model = get_model(name, num_classes=7, width=4)
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    logits = model.apply(variables, x, train=False)
    self.assertEqual(logits.shape, (3, 7))
    _, updates = model.apply(variables, x, train=True,
                             mutable=["batch_stats"])
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         updates["batch_stats"], variables["batch_stats"])
    self.assertTrue(any(jax.tree.leaves(moved)))

  def test_eval_mode_is_per_example(self):
    # With running statistics, an example's logits do not depend on its batch.
    model = get_model("resnet18", num_classes=10, width=4)
    x = jax.random.uniform(jax.random.key(2), (4, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    full = model.apply(variables, x, train=False)
    single = model.apply(variables, x[:1], train=False)
    self.assertTrue(jnp.allclose(full[:1], single, atol=1e-5))

  @parameterized.parameters((8, 8), (7, 7), (7, 4), (1, 1))
  def test_max_pool_matches_flax_value_and_gradient(self, h, w):
    # Distinct values (a permutation): no ties, so the reshape form and
    # flax's select-and-scatter route every gradient entry to the same pixel.
    # Negative values too, so the -inf padding of odd sizes is exercised.
    size = 2 * h * w * 3
    x = jnp.asarray(np.random.default_rng(0).permutation(size)
                    .reshape(2, h, w, 3) - size / 2, jnp.float32)
    ref = lambda a: nn.max_pool(a, (2, 2), strides=(2, 2), padding="SAME")
    out = max_pool_2x2(x)
    chex.assert_shape(out, (2, (h + 1) // 2, (w + 1) // 2, 3))
    chex.assert_trees_all_equal(out, ref(x))
    cot = jax.random.normal(jax.random.key(3), out.shape)
    grad = jax.grad(lambda a: jnp.sum(max_pool_2x2(a) * cot))(x)
    chex.assert_trees_all_equal(grad, jax.grad(
        lambda a: jnp.sum(ref(a) * cot))(x))
    # Exactly one pixel per window receives the window's cotangent.
    self.assertEqual(int(jnp.sum(grad != 0)), out.size)

  def test_unknown_model(self):
    with self.assertRaisesRegex(UEError, "unknown model 'vgg'"):
      get_model("vgg", num_classes=10, width=4)


if __name__ == "__main__":
  absltest.main()
