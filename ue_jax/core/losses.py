"""Cross-entropy and accuracy with an optional example mask (for padding)."""

import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, mask=None):
  """Mean cross-entropy over the valid examples."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if mask is None:
    return jnp.mean(losses)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def summed_cross_entropy(logits, labels, mask):
  """Cross-entropy summed over the valid examples (mask 1)."""
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                labels)
  return jnp.sum(per_example * mask)


def correct(logits, labels, mask=None):
  """Number of correct predictions among the valid examples."""
  hits = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return jnp.sum(hits if mask is None else hits * mask)
