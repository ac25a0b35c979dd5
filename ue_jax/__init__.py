"""ue_jax: error-minimizing (unlearnable-example) noise in JAX/Flax."""

__version__ = "0.1.0"
