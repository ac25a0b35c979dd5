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


def conv_bn(cin, cout, k=3):
  return k * k * cin * cout + 2 * cout  # bias-free conv, BN scale + bias


def vgg11_count(w, shape, k):
  chans = [shape[-1], w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w, 8 * w, 8 * w]
  return sum(conv_bn(a, b) for a, b in zip(chans, chans[1:])) + 8 * w * k + k


def mobilenetv2_count(w, shape, k):
  n = conv_bn(shape[-1], w)
  cin = w
  for t, c, blocks, _ in ((1, 1, 1, 1), (6, 2, 2, 2), (6, 4, 2, 2),
                          (6, 8, 2, 2)):
    for _ in range(blocks):
      hidden = cin * t
      if t != 1:
        n += conv_bn(cin, hidden, 1)
      n += 9 * hidden + 2 * hidden  # depthwise
      n += conv_bn(hidden, c * w, 1)
      cin = c * w
  return n + conv_bn(cin, 16 * w, 1) + 16 * w * k + k


def vit_count(w, shape, k, patch=4, depth=4, ratio=2):
  d = 4 * w
  tokens = (shape[0] // patch) * (shape[1] // patch)
  block = (2 * d + 3 * d * d + 3 * d + d * d + d + 2 * d
           + d * ratio * d + ratio * d + ratio * d * d + d)
  return (patch * patch * shape[-1] * d + d + tokens * d + depth * block
          + 2 * d + d * k + k)


def small_cnn_count(w, shape, k):
  return (conv_bn(shape[-1], w) + conv_bn(w, 2 * w) + conv_bn(2 * w, 4 * w)
          + 4 * w * k + k)


HAND_COUNTS = {"vgg11": vgg11_count, "mobilenetv2": mobilenetv2_count,
               "vit": vit_count, "small_cnn": small_cnn_count}


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

  @parameterized.parameters(
      ("vgg11", 16, (28, 28, 1)), ("vgg11", 64, (32, 32, 3)),
      ("mobilenetv2", 16, (28, 28, 1)), ("mobilenetv2", 8, (32, 32, 3)),
      ("vit", 16, (28, 28, 1)), ("vit", 8, (32, 32, 3)),
      ("small_cnn", 16, (28, 28, 1)))
  def test_parameter_count_by_hand(self, name, width, shape):
    model = get_model(name, num_classes=10, width=width)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)),
                           train=False))
    self.assertEqual(count(variables["params"]),
                     HAND_COUNTS[name](width, shape, 10))
    logits = jax.eval_shape(lambda v: model.apply(
        v, jnp.zeros((5, *shape)), train=False), variables)
    self.assertEqual(logits.shape, (5, 10))

  def test_depthwise_equals_grouped_conv(self):
    from ue_jax.models import mobilenet  # pylint: disable=g-import-not-at-top
    x = jax.random.normal(jax.random.key(0), (2, 7, 8, 5))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 5))
    for strides in (1, 2):
      conv = nn.Conv(5, (3, 3), strides=strides, padding=((1, 1), (1, 1)),
                     use_bias=False, feature_group_count=5)
      ref = conv.apply({"params": {"kernel": kernel}}, x)
      out = mobilenet.depthwise_3x3(x, kernel, strides=strides)
      chex.assert_trees_all_close(out, ref, atol=1e-5)

  def test_vgg11_at_width_64_is_the_standard_cifar_vgg11_bn(self):
    # PyTorch's VGG-11-BN for CIFAR-10 (conv biases, one linear head) has
    # 9,231,114 parameters; ours drops the 2,752 conv biases (BN follows).
    model = get_model("vgg11", num_classes=10, width=64)
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    self.assertEqual(count(shapes["params"]), 9_231_114 - 2_752)

  @parameterized.parameters("resnet18", "small_cnn", "small_cnn_avg",
                            "vgg11", "mobilenetv2")
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
