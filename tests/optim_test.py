"""The optimizer matches PyTorch's clip-then-SGD(momentum, coupled decay)."""

import math

import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from ue_jax.core import optim


class OptimTest(absltest.TestCase):

  def test_clip_before_decay_then_momentum(self):
    tx = optim.sgd(0.1, momentum=0.9, weight_decay=0.01, grad_clip=1.0)
    w = jnp.array([3.0, 4.0])
    g = jnp.array([6.0, 8.0])  # norm 10 -> clipped to norm 1
    state = tx.init(w)
    u1, state = tx.update(g, state, w)
    # PyTorch: d = clip(g) + wd * w; buf = d; w -= lr * buf
    d1 = g / 10.0 + 0.01 * w
    np.testing.assert_allclose(u1, -0.1 * d1, rtol=1e-6)
    w2 = w + u1
    u2, _ = tx.update(g, state, w2)
    d2 = g / 10.0 + 0.01 * w2
    np.testing.assert_allclose(u2, -0.1 * (0.9 * d1 + d2), rtol=1e-6)

  def test_epoch_cosine(self):
    sched = optim.epoch_cosine(0.1, epochs=4, steps_per_epoch=10)
    for step, epoch in ((0, 0), (9, 0), (10, 1), (25, 2), (39, 3)):
      expected = 0.05 * (1 + math.cos(math.pi * epoch / 4))
      self.assertAlmostEqual(float(sched(step)), expected, places=6)


if __name__ == "__main__":
  absltest.main()
