"""ue_jax: error-minimizing (unlearnable-example) noise in JAX/Flax.

The package is grouped by role, in layers; a module imports its own group and
the layers below it, never up and never sideways (docs/architecture.md,
"Import order", which tests/imports_test.py enforces):

  main, pipeline, protect,  entry points: flags, the stages of a config,
  protect_folder            the folder tool (they combine the groups below)
  search/ evaluation/  the drivers that search for a noise; what is done with
                       one (release, evaluate, battery, report)
  training/     the host training loops and noise layouts both of them share
  config/ parallel/    the config schema and its checks; the device mesh,
                       data placed on it, memory plans
  io/           files: datasets, .npz, artifacts, checkpoints, metrics
  core/ models/ pure math on arrays and pytrees (never a ConfigDict); Flax
                modules, chosen by name
  runtime/      errors, signal handling, flag errors (the leaf)

A new feature lands in the group of its role, not in an entry module.
"""

__version__ = "0.1.0"
