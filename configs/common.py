"""Shared defaults: the paper's sample-wise min-min settings (docs/method.md §2, §6).

Every experiment file starts from `base()` and overrides what differs; its
variants come from the text after `file.py:` in --config, read by
`parse_arg`.
"""

import ml_collections


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.seed = 0  # model init, subsets and shuffling all derive from it

  c.data = ml_collections.ConfigDict()
  c.data.name = "cifar10"     # cifar10 | cifar100 | svhn_cropped | mnist | fashion_mnist
                              # (free text for source=folder)
  c.data.source = "auto"      # auto | idx | npz | tfds | folder
  c.data.data_dir = ""        # IDX folder or TFDS data_dir
  c.data.train_path = ""      # .npz with images (uint8 NHWC) and labels;
  c.data.test_path = ""       # folder: one class tree (or .tar/.tgz) each
  # source=folder (ue_jax/io/folder_source.py): a folder or .tar/.tar.gz/.tgz
  # holding train/<class>/* and test/<class>/* (or train_path/test_path).
  c.data.path = ""
  c.data.image_size = 0       # folder: 0 = one size for all; N = resize NxN
  c.data.cache_dir = ""       # folder: decoded-array cache; "" =
                              # $XDG_CACHE_HOME/ue_jax or ~/.cache/ue_jax,
                              # "none" = off
  c.data.download = False     # let TFDS download (needs the [data] extra)
  c.data.train_size = 0       # 0 = all; else a seeded class-stratified subset
  c.data.test_size = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet18"   # resnet18 | small_cnn | small_cnn_avg
  c.model.width = 64          # first-stage channels; 64 = the paper's ResNet-18
  # The dtype the generator's and learners' layers compute in: float32 |
  # bfloat16 (convolutions and matmuls in bf16, for GPUs and TPUs, where
  # bf16 matrix work is about twice as fast; parameters, optimizer state,
  # BatchNorm statistics, logits, losses and the noise stay float32; its
  # measured agreement with float32: docs/operations.md).
  c.model.compute_dtype = "float32"

  c.noise = ml_collections.ConfigDict()
  c.noise.kind = "error_min"  # error_min | error_max | random (the original's
                              # --attack_type min-min | min-max | random);
                              # ar | lsp | ops: shortcut noise, no model
                              # (ue_jax/core/shortcuts.py, sample-wise only);
                              # tap | sep: targeted adversarial poisons
                              # (ue_jax/search/targeted.py)
  c.noise.layout = "samplewise"  # samplewise [N,H,W,C] | classwise [classes,H,W,C]
  c.noise.eps = 8 / 255       # L-inf budget, [0,1] units
  c.noise.step_size = 0.8 / 255
  c.noise.num_steps = 20      # K: PGD steps per example per round
  c.noise.init = "zeros"      # zeros | uniform (U(-eps, eps), --random_start)
                              # | normal (N(0, eps^2) clipped to eps, TAP's)
  # kind=random only: values U(-eps, eps) | sign (+-eps), drawn per
  # random_patch x random_patch block of pixels (1 = per pixel, the paper's).
  c.noise.random_values = "uniform"
  c.noise.random_patch = 1
  # kind=ar only: per-image budget linf (max |delta| = eps) | l2 (norm
  # ar_l2_eps, 0 = eps * sqrt(H W C), then clipped to eps); the process is
  # generated ar_crop pixels larger and its first rows/columns cut.
  c.noise.ar_norm = "linf"
  c.noise.ar_l2_eps = 0.0
  c.noise.ar_crop = 4
  c.noise.lsp_patch = 8       # kind=lsp only: block size of the patches
  # kind=lsp only: L2 norm of each image's noise (0 = eps * sqrt(H W C), the
  # LSP code's rule), then clipped to eps.
  c.noise.lsp_l2_eps = 0.0
  # error_min / error_max: the PGD loss is averaged over this many random
  # draws of `eot_augment` per step (expectation over transformations);
  # eot_augment "none" with 1 sample is the paper's PGD.
  c.noise.eot_augment = "none"
  c.noise.eot_samples = 1
  # error_min only: robust error-minimizing noise (REM) when rem_radius > 0:
  # the noise is scored, and the generator's model steps train, on
  # adversarial examples of radius rem_radius (<= eps) found by rem_steps
  # signed steps of rem_step_size from a random start (rem_steps=0: the
  # random start itself, stable error-minimizing noise's, SEM's, point).
  # rem_radius 0 = the paper's.
  c.noise.rem_radius = 0.0
  c.noise.rem_steps = 10
  c.noise.rem_step_size = 0.8 / 255
  # error_min / error_max: the subspace the noise searches in (core/noise.py
  # FORMS): rgb (any noise, the paper's) | luma (one value per pixel in all
  # channels: grayscale keeps it) | lowfreq (one value per form_block x
  # form_block block per channel: JPEG keeps more of it) | luma_lowfreq.
  c.noise.form = "rgb"
  c.noise.form_block = 4
  # Searched kinds (error_min, error_max, tap, sep): write the noise found
  # as eps * sign(its projection onto noise.form), every value at the bound
  # with the sign the search gave it (zeros stay zero), instead of as it is.
  # The search itself is unchanged; its stop test scores the noise as found.
  c.noise.at_bound = False
  # error_min / error_max: the classes whose noise is searched (their
  # examples, class-wise those of the fit subset, are the noise steps' and
  # the stop test's); the other classes' noise stays zero, so they are
  # released unchanged while the model steps still train on them. () =
  # every class. A data owner's photos as one class beside a reference set
  # of others (docs/protect.md).
  c.noise.fit_classes = ()
  # tap / sep only: the target class of an image of class y is
  # (y + target_shift) mod K; 0 = the method's own (tap 1, sep K // 2).
  c.noise.target_shift = 0
  # sep only: the ensemble, this many checkpoints of the pretraining
  # (generate.pretrain_epochs >= it), evenly spaced, the last included.
  c.noise.sep_members = 30
  c.noise.paper_release = False  # True: the original's one-sided clamp+floor
  # How the state holds the noise on device: float32 | bfloat16 |
  # int8 (integer steps of eps/127). noise.npy is float32 in every case.
  c.noise.storage = "float32"

  # SPMD (ue_jax/parallel/sharding.py): a 1-D mesh `data` over the devices;
  # batches and sample-wise noise are split by rows, the model is replicated.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 0             # devices on the data axis; 0 = all of them

  c.generate = ml_collections.ConfigDict()
  c.generate.batch_size = 512
  c.generate.eval_batch_size = 512
  c.generate.train_steps = 10     # M: model steps per round
  # The order the model steps walk the training set in: "shuffled", one
  # seeded permutation fixed for the run; "stored", rows as stored (the
  # original's unshuffled loader, sound only on data stored in a mixed order,
  # as CIFAR-10's files are; on a class-sorted image folder the search never
  # leaves chance, docs/results.md).
  c.generate.model_order = "shuffled"
  c.generate.lr = 0.1             # constant (the original never steps it)
  c.generate.momentum = 0.9
  c.generate.weight_decay = 5e-4
  c.generate.grad_clip = 5.0
  c.generate.stop_accuracy = 0.99  # stop when accuracy on the release >= this
  c.generate.min_rounds = 1        # search at least this long (paper: 1)
  c.generate.augment = "none"      # model steps only (paper: none); PGD never
                                   # (its own: noise.eot_augment); also the
                                   # robust kinds gray | jpeg | strong | pool
  c.generate.max_rounds = 50       # hard cap; reaching it is reported
  # Wall-clock cap on the search, in seconds of generation (over resumes);
  # 0 = none. Checked before every batch (with several processes: at round
  # ends); reaching it saves a checkpoint, scores and releases the noise as
  # it is (summary: capped); a rerun with a larger cap resumes from there.
  c.generate.max_seconds = 0.0
  # Class-wise noise is fitted and stop-tested on a seeded class-stratified
  # subset of this fraction (the original's universal_train_portion; 1.0 =
  # the whole set); the model steps always walk the whole training set.
  c.generate.classwise_subset = 0.2
  # error_max: stop once accuracy on the release <= this (the original's
  # stop error 0.9 sample-wise -> 0.1; 0.8 class-wise -> 0.2).
  c.generate.error_max_stop_accuracy = 0.1
  # Epochs of training on the clean images, with the evaluate recipe below,
  # before the search (error_max, tap, sep; the original: its full
  # schedule, 60).
  c.generate.pretrain_epochs = 0

  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.model = ""           # "" = same as model.name
  c.evaluate.width = 0            # 0 = same as model.width
  c.evaluate.epochs = 60
  c.evaluate.batch_size = 128
  c.evaluate.eval_batch_size = 512
  c.evaluate.lr = 0.1             # cosine over epochs, stepped per epoch
  c.evaluate.momentum = 0.9
  c.evaluate.weight_decay = 5e-4
  c.evaluate.grad_clip = 5.0
  c.evaluate.augment = "crop_flip"  # none | crop | crop_flip | crop_flip_rotate
  c.evaluate.seed = 0
  c.evaluate.train_clean = True   # also train on the clean images (baseline)

  # Partial protection (docs/method.md §5, §7): only the selected examples are
  # released with noise, the rest clean. The noise is generated for all.
  c.partial = ml_collections.ConfigDict()
  c.partial.rate = 1.0    # a seeded uniform random fraction (not stratified)
  c.partial.classes = ()  # or every example of these classes, e.g. (0, 1, 8, 9)

  c.release = ml_collections.ConfigDict()
  c.release.noise_path = ""       # "" = DIR/noise.npy from the generate stage
  # kind=ops only (and required by it): the release sets one pixel per image
  # to any value (L0 = 1) instead of keeping every pixel within eps.
  c.release.one_pixel = False

  # The protection battery (--stage=battery; docs/method.md): the release
  # measured against many learners x defenses. Each training uses the
  # evaluate block's recipe, with the overrides below (0 = evaluate's).
  c.battery = ml_collections.ConfigDict()
  c.battery.enabled = False    # True: --stage=all runs it after evaluate
  c.battery.release_path = ""  # "" = DIR/release/unlearnable_train.npz
  # "name" or "name:width" (no width: evaluate.width or model.width).
  c.battery.learners = ("resnet18", "small_cnn", "vgg11", "mobilenetv2",
                        "vit")
  c.battery.defenses = ("crop_flip", "none", "jpeg10", "median_filter",
                        "bit_depth", "grayscale", "cutout", "mixup",
                        "cutmix", "gaussian_noise", "gaussian_blur",
                        "jpeg50", "ueraser", "adv_train")
  # star: every learner x defenses[0], then learners[0] x every defense;
  # cross: every learner x every defense.
  c.battery.cells = "star"
  c.battery.epochs = 8
  c.battery.batch_size = 0
  c.battery.lr = 0.0
  c.battery.seed = 0
  # Test images the per-epoch curves are measured on: a seeded stratified
  # subset of this size (0 or more than the test set = all of it). The sweep
  # is a large part of a training: at the quick start's size a ResNet-18
  # training took 2 min 10 s with curves on 10000 test images, 1 min 28 s on
  # 2000 (docs/operations.md); the standard error of an accuracy on 2000 is at
  # most 0.011.
  c.battery.test_size = 2000
  c.battery.adv_eps = 0.0      # PGD-AT radius; 0 = noise.eps (the release's)
  c.battery.adv_steps = 2      # PGD-AT inner steps (step 2.5 * eps / steps)
  c.battery.ueraser_copies = 2  # augmented copies, trained on the max loss
  # Folder of the clean-trained results ("" = DIR/battery/clean); point two
  # batteries of the same data at one folder to train the clean side once.
  c.battery.clean_cache = ""

  # Generation checkpoints (Orbax, DIR/checkpoints). A run started again with
  # the same --workdir resumes from the latest one and gives the same noise as
  # an uninterrupted run. The end of every round is always saved.
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_batches = 0      # and after every n noise batches; 0 off
  c.checkpoint.every_seconds = 600.0  # and n seconds after the last save; 0 off
  c.checkpoint.max_to_keep = 2        # older checkpoints are deleted
  return c


def classwise(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Switches `c` to the original's class-wise search (docs/method.md §3, §10):
  one noise per class, K = 1 step per round, fitted and stop-tested on a
  stratified 20 % subset, stop at 99 %, at most 50 rounds."""
  c.noise.layout = "classwise"
  c.noise.num_steps = 1
  c.generate.classwise_subset = 0.2
  c.generate.stop_accuracy = 0.99
  c.generate.max_rounds = 50
  return c


def robust_classwise(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Switches `c` to the class-wise search made to survive grayscale and
  JPEG (docs/method.md, "Robust search"): `classwise`, with luma noise
  (one value per pixel, the same in R, G and B), every PGD step through 2
  JPEG round trips at qualities drawn from 10/30/50/75, the generator's
  model steps on the "pool" augmentation of the perturbed images, and the
  noise found written at the bound (eps * sign)."""
  classwise(c)
  c.noise.at_bound = True
  c.noise.eot_augment = "jpeg"
  c.noise.eot_samples = 2
  c.noise.form = "luma"
  c.generate.augment = "pool"
  return c


def parse_arg(arg, **choices) -> dict:
  """The `key=value,...` text that --config passes after `file.py:` (None
  or "" without one) as {key: value} for every key of `choices`, which maps
  each key to its allowed values, the default first (values are strings).

  An unknown key or value, a key given twice or a pair without "=" raises
  ValueError naming what to choose from."""
  keys = ", ".join(choices)
  values = {key: allowed[0] for key, allowed in choices.items()}
  given = set()
  for pair in (arg or "").split(","):
    if not pair.strip():
      continue
    key, eq, value = (part.strip() for part in pair.partition("="))
    if not eq:
      raise ValueError(f"config argument {pair.strip()!r} is not key=value; "
                       f"keys: {keys}")
    if key not in choices:
      raise ValueError(f"unknown config argument {key!r}; keys: {keys}")
    if key in given:
      raise ValueError(f"config argument {key!r} given twice")
    if value not in choices[key]:
      raise ValueError(f"config argument {key}={value!r}: choose one of "
                       f"{', '.join(choices[key])}")
    given.add(key)
    values[key] = value
  return values
