"""Experiment configs: one file per experiment family (ml_collections), each
variant one experiment, chosen as `--config=configs/FILE.py:key=value,...`."""
