"""ue_jax: error-minimizing (unlearnable-example) noise in JAX/Flax.

The package is grouped by role; imports point down this list, never up:

  main, pipeline, protect,  entry points: flags, the stages of a config,
  protect_folder            the folder tool (they combine search and evaluation)
  search/       the drivers that search for a noise (min-min, baselines)
  evaluation/   what is done with a noise: release, train, evaluate, report
  core/         pure math on arrays and pytrees; never sees a ConfigDict
  models/       Flax modules, chosen by name
  parallel/     the device mesh, data placed on it, memory plans
  io/           files: datasets, .npz, artifacts, checkpoints, metrics
  runtime/      config checks, errors, signal handling

core/ and models/ import only each other and runtime.errors (a leaf). A new
feature lands in the group of its role, not in an entry module.
"""

__version__ = "0.1.0"
