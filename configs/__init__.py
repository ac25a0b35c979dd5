"""Experiment configs: one file = one experiment (ml_collections)."""
