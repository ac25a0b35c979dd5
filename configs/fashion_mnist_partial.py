"""Partial protection on real Fashion-MNIST, 2 CPU cores (docs/method.md §5, §7).

Sample-wise error-minimizing noise as configs/fashion_mnist_samplewise.py
(same data, generator, learner), released on a seeded random fraction
`partial.rate` of the training images only; the rest are released clean.
Evaluation trains on that release and, for comparison (the paper's), on the
clean remainder alone (the unprotected images only). The clean-data baseline
is the same for every rate, so it is off here (`evaluate.train_clean`); at
rate 0 the release is the clean set itself.

Noise does not depend on the rate, so generate it once and release it at each
rate (two commands per rate; the noise of the sample-wise quick start fits,
as the data subset is the same):

  python -m ue_jax.main --config=configs/fashion_mnist_samplewise.py \
      --workdir=runs/fm_samplewise
  for r in 0.0 0.2 0.4 0.6 0.8 1.0; do
    for s in release evaluate; do
      python -m ue_jax.main --config=configs/fashion_mnist_partial.py \
          --workdir=runs/fm_partial_$r --config.partial.rate=$r \
          --config.release.noise_path=runs/fm_samplewise/noise.npy --stage=$s
    done
  done
  python tools/report.py runs/fm_partial_* --out=runs/report/fm_partial

Whole classes instead of a fraction: --config.partial.classes='(0,)' (then
evaluation also reports test accuracy on the protected classes and on the
others). Or one self-contained run per rate, generating its own noise:
--config.partial.rate=0.4 with the default --stage=all.

Measured figures: docs/results.md.
"""

from configs import fashion_mnist_samplewise


def get_config():
  c = fashion_mnist_samplewise.get_config()
  c.name = "fashion_mnist_partial"
  c.partial.rate = 0.5
  c.evaluate.train_clean = False
  return c
