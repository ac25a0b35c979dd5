"""Slow: the whole pipeline on a small subset of the real CIFAR-10 (the
JPEG tar named by $UE_JAX_CIFAR10, read through data.source=folder) shows
the accuracy gap; skipped where no copy exists, such as a fresh clone."""

import json
import os
import tempfile

from absl.testing import absltest
import pytest

from tests import helpers

pytestmark = pytest.mark.slow
CIFAR10 = os.environ.get("UE_JAX_CIFAR10", "")


@absltest.skipUnless(os.path.isfile(CIFAR10),
                     "set UE_JAX_CIFAR10 to a CIFAR-10 image-folder tar "
                     "(train/<class>/*.jpg, test/<class>/*.jpg) to run it")
class Cifar10Test(absltest.TestCase):

  def test_unlearnable_release_is_not_learnable(self):
    workdir = tempfile.mkdtemp(prefix="ue_jax_cifar10_")
    # The CPU config on 500 training and 1000 test images, model batches
    # of 128 and 12 learner epochs, to keep the test short (about 2.5 min
    # on 2 idle cores). Measured with these settings: 6 rounds to the stop
    # rule (hence at most 12 here); the frozen generator scored 1.000 on
    # its release and 0.320 on the clean training images; the learners
    # clean 0.258, on the release 0.271 (with 8 epochs: 0.212 / 0.126; the
    # standard error of either is about 0.014). At this size the learner
    # does not fit the noise in so few steps, so its gap moves with the
    # host's arithmetic: the test asserts the generator's gap, which is
    # wide, that the learner learns (twice chance), and that the release
    # does not teach it clearly more than the clean images do; the
    # learner's gap is measured at 5000 images (README: 0.229 against
    # 0.661).
    proc = helpers.run_main(
        workdir, f"--config.data.path={CIFAR10}",
        f"--config.data.cache_dir={os.path.join(workdir, 'cache')}",
        "--config.data.train_size=500", "--config.data.test_size=1000",
        "--config.generate.batch_size=128", "--config.generate.max_rounds=12",
        "--config.evaluate.epochs=12",
        config="configs/cifar10_samplewise.py:scale=cpu", timeout=1800)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "results.json")) as f:
      r = json.load(f)
    clean, unlearnable = r["clean_test_accuracy"], r["unlearnable_test_accuracy"]
    self.assertEqual(r["class_names"][:3], ["airplane", "automobile", "bird"])
    self.assertEqual((r["train_size"], r["test_size"]), (500, 1000))
    self.assertTrue(r["stop_reached"])
    self.assertEqual(r["release_max_pixel_change"], 8)  # eps = 8/255
    self.assertGreaterEqual(clean, 0.20)
    # The noise is a shortcut: the frozen generator fits the release and
    # not the clean images it was made from.
    self.assertGreaterEqual(r["final_train_accuracy_on_release"], 0.99)
    self.assertLessEqual(r["generator_clean_train_accuracy"], 0.5)
    # The release teaches the learner no more than the clean images do,
    # within about 2.5 standard errors of the difference.
    self.assertLessEqual(unlearnable, clean + 0.05)


if __name__ == "__main__":
  absltest.main()
