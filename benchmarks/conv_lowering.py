"""How XLA:CPU runs the ResNet-18's convolutions, lowered four other ways.

XLA:CPU is slow on the weight-gradient convolutions of the model step. This
times forward + backward (gradient with respect to the input and to the
kernel) of each convolution shape of the width-16 ResNet-18 at 28x28x1 as:

  xla      lax.conv_general_dilated (flax's nn.Conv)
  slices   kh*kw shifted (strided) slices of the padded input concatenated
           on channels, then one matrix product with the [kh*kw*C, O]
           kernel; its transpose is slices, pads and adds, all GEMMs
  taps     the same slices, each multiplied by its own [C, O] tap of the
           kernel and summed (kh*kw smaller GEMMs, no concatenation)
  patches  lax.conv_general_dilated_patches, then one matrix product
  nchw     XLA's convolution on NCHW data and OIHW kernels (transposes
           around it): the layout lever

and then the model step (forward, backward, clip, SGD: `steps.model_step`
through `generate.build`, as a run jits it) and the PGD step of the whole
ResNet-18 width 16 with every convolution lowered each way, on 1 and on 2
CPU devices (one subprocess each: JAX fixes the count at start-up).

  python benchmarks/conv_lowering.py --out=runs/conv_lowering.json

All five compute the same function (checked here before timing: outputs and
gradients against `lax.conv_general_dilated`).
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.timing import median_seconds, sweep_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

IMPLS = ("xla", "slices", "taps", "patches", "nchw")


# ------------------------------------------------------------ the lowerings
def _check_layout(lhs, rhs, padding, strides, lhs_dilation, rhs_dilation,
                  dimension_numbers, feature_group_count):
  """Explicit padding pairs; refuses what these lowerings do not cover."""
  from jax import lax  # pylint: disable=g-import-not-at-top
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                    ("NHWC", "HWIO", "NHWC"))
  if dimension_numbers is not None and lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, dimension_numbers) != nhwc:
    raise ValueError("NHWC inputs and HWIO kernels only")
  if any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ())):
    raise ValueError("no dilation")
  if feature_group_count != 1:
    raise ValueError("no feature groups")
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides,
                                  padding)
  return tuple(tuple(p) for p in padding)


def _taps(lhs, rhs, window_strides, padding):
  """The kh*kw shifted, strided views of the padded input, row-major."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  kh, kw, c, _ = rhs.shape
  sh, sw = window_strides
  x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  b, hp, wp, _ = x.shape
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  return [lax.slice(x, (0, i, j, 0),
                    (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]


def _drop_in(body):
  """`body(lhs, rhs, window_strides, padding_pairs, precision)` as a
  drop-in for lax.conv_general_dilated (NHWC/HWIO only, checked)."""
  @functools.wraps(body)
  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
           precision=None, **_):
    padding = _check_layout(lhs, rhs, padding, window_strides, lhs_dilation,
                            rhs_dilation, dimension_numbers,
                            feature_group_count)
    return body(lhs, rhs, window_strides, padding, precision)
  return conv


@_drop_in
def slices_conv(lhs, rhs, window_strides, padding, precision):
  """Convolution as concatenated shifted slices and one matrix product."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  taps = _taps(lhs, rhs, window_strides, padding)
  cols = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
  kh, kw, c, o = rhs.shape
  return jnp.einsum("bhwk,ko->bhwo", cols, rhs.reshape(kh * kw * c, o),
                    precision=precision)


@_drop_in
def taps_conv(lhs, rhs, window_strides, padding, precision):
  """Convolution as a sum of one matrix product per kernel tap."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  taps = _taps(lhs, rhs, window_strides, padding)
  kh, kw, c, o = rhs.shape
  w = rhs.reshape(kh * kw, c, o)
  return sum(jnp.einsum("bhwc,co->bhwo", t, w[k], precision=precision)
             for k, t in enumerate(taps))


@_drop_in
def patches_conv(lhs, rhs, window_strides, padding, precision):
  """Convolution as lax.conv_general_dilated_patches and a matrix product
  (the patches' features are ordered channel, then kernel row, column)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  kh, kw, c, o = rhs.shape
  cols = lax.conv_general_dilated_patches(
      lhs, (kh, kw), window_strides, padding,
      dimension_numbers=("NHWC", "OIHW", "NHWC"))
  w = jnp.transpose(rhs, (2, 0, 1, 3)).reshape(c * kh * kw, o)
  return jnp.einsum("bhwk,ko->bhwo", cols, w, precision=precision)


@_drop_in
def nchw_conv(lhs, rhs, window_strides, padding, precision):
  """The same convolution given to XLA in NCHW / OIHW layout (the data
  and kernel layout lever), transposed in and out."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  y = lax.conv_general_dilated(
      jnp.transpose(lhs, (0, 3, 1, 2)), jnp.transpose(rhs, (3, 2, 0, 1)),
      window_strides, padding, dimension_numbers=("NCHW", "OIHW", "NCHW"),
      precision=precision)
  return jnp.transpose(y, (0, 2, 3, 1))


def conv_fn(impl):
  from jax import lax  # pylint: disable=g-import-not-at-top
  return {"xla": lax.conv_general_dilated, "slices": slices_conv,
          "taps": taps_conv, "patches": patches_conv, "nchw": nchw_conv}[impl]


# ----------------------------------------------------- the network's shapes
def resnet_convs(width: int, size: int, channels: int):
  """(spatial size in, C, O, kernel, stride, count) of every convolution of
  the CIFAR ResNet-18 (models/resnet.py) on a size x size x channels input."""
  shapes = [(size, channels, width, 3, 1, 1)]
  c, s = width, size
  for stage in range(4):
    o, stride = width * 2**stage, 1 if stage == 0 else 2
    out = -(-s // stride)
    shapes.append((s, c, o, 3, stride, 1))       # block 1, first conv
    if stride != 1 or c != o:
      shapes.append((s, c, o, 1, stride, 1))     # its projection shortcut
    shapes.append((out, o, o, 3, 1, 3))          # the other three convs
    c, s = o, out
  merged = {}
  for *shape, count in shapes:  # stage 1's first conv is like the others
    merged[tuple(shape)] = merged.get(tuple(shape), 0) + count
  return [(*shape, count) for shape, count in merged.items()]


def conv_grads(impl, stride, pad):
  """jit of (x, w, cotangent) -> (y, dx, dw) for one lowering."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  conv = conv_fn(impl)

  def loss(x, w, g):
    y = conv(x, w, (stride, stride), ((pad, pad), (pad, pad)),
             dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.vdot(y, g), y

  def fwd_bwd(x, w, g):
    (_, y), (dx, dw) = jax.value_and_grad(loss, argnums=(0, 1),
                                          has_aux=True)(x, w, g)
    return y, dx, dw

  return jax.jit(fwd_bwd)


def layer_worker(a):
  """Per-shape timings of each lowering on this process's devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = []
  rng = np.random.default_rng(0)
  for batch in a.batches:
    for s, c, o, k, stride, count in resnet_convs(a.width, 28, 1):
      pad = (k - 1) // 2
      x = rng.standard_normal((batch, s, s, c)).astype(np.float32)
      w = rng.standard_normal((k, k, c, o)).astype(np.float32) * 0.1
      out = -(-s // stride)
      g = rng.standard_normal((batch, out, out, o)).astype(np.float32)
      row = {"batch": batch, "size": s, "in": c, "out": o, "kernel": k,
             "stride": stride, "count": count}
      ref = None
      for impl in a.impls:
        fn = conv_grads(impl, stride, pad)
        got = [np.asarray(v) for v in fn(x, w, g)]
        if ref is None:
          ref = got
        row[f"max_rel_err_{impl}"] = max(
            float(np.max(np.abs(u - v)) / np.max(np.abs(v)))
            for u, v in zip(got, ref))
        row[f"ms_{impl}"] = 1e3 * median_seconds(fn, x, w, g, repeats=a.repeats)
      rows.append(row)
      print(json.dumps(row), flush=True)
  print("ROWS " + json.dumps(rows), flush=True)
  del jax


def step_worker(a):
  """Model-step and PGD throughput of the whole ResNet with each lowering,
  on `a.devices` CPU devices."""
  import jax  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  from ue_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
  distributed.use_cpu_cores(a.devices)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  from ue_jax.io import data as data_lib  # pylint: disable=g-import-not-at-top
  from ue_jax.models import resnet  # pylint: disable=g-import-not-at-top
  from ue_jax.search import generate  # pylint: disable=g-import-not-at-top

  original = resnet.Conv
  results = []
  rng = np.random.default_rng(0)
  for batch in a.batches:
    n = batch * a.sweep_batches
    train = data_lib.make_dataset(
        rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
        rng.integers(0, 10, n), 10)
    batches = [data_lib.gather(train, rows)
               for rows in data_lib.batches(n, batch)]
    for impl in a.impls:
      resnet.Conv = (original if impl == "xla" else functools.partial(
          original, conv_general_dilated=conv_fn(impl)))
      cfg = common.base()
      cfg.model.name, cfg.model.width = "resnet18", a.width
      cfg.noise.num_steps = a.pgd_steps
      cfg.generate.batch_size = cfg.generate.eval_batch_size = batch
      placement = sharding.Placement(sharding.make_mesh(0))
      state, (model_step, noise_step, _) = generate.build(cfg, train,
                                                          placement)

      times = {"model": [], "pgd": []}
      for r in range(a.repeats + 1):  # the first sweep compiles
        state, t_model = sweep_seconds(model_step, state, batches)
        state, t_pgd = sweep_seconds(noise_step, state, batches)
        if r:
          times["model"].append(t_model)
          times["pgd"].append(t_pgd)
      row = {"devices": jax.device_count(), "batch": batch, "impl": impl,
             "model_images_per_s": n / statistics.median(times["model"]),
             "pgd_image_steps_per_s": n * a.pgd_steps / statistics.median(
                 times["pgd"]),
             "model_sweeps_s": times["model"], "pgd_sweeps_s": times["pgd"]}
      results.append(row)
      print(json.dumps(row), flush=True)
  resnet.Conv = original
  del nn
  print("ROWS " + json.dumps(results), flush=True)


def run_worker(kind, extra):
  argv = [sys.executable, os.path.abspath(__file__), f"--worker={kind}",
          *extra]
  proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO,
                        timeout=3600, check=False)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")]
  return json.loads(line[-1][5:])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="128,256")
  p.add_argument("--impls", default=",".join(IMPLS),
                 help="lowerings to time; the first is the reference")
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--devices", default="1,2",
                 help="CPU device counts for the whole-model steps")
  p.add_argument("--sweep-batches", type=int, default=2,
                 help="batches per timed sweep of the whole-model steps")
  p.add_argument("--pgd-steps", type=int, default=10, help="K")
  p.add_argument("--skip-layers", action="store_true")
  p.add_argument("--skip-steps", action="store_true")
  p.add_argument("--out", default="runs/conv_lowering.json")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  a = p.parse_args()
  a.batches = [int(b) for b in a.batches.split(",")]
  a.impls = a.impls.split(",")
  if a.worker == "layers":
    layer_worker(a)
    return
  if a.worker.startswith("steps"):
    a.devices = int(a.worker.split(":")[1])
    step_worker(a)
    return

  common = [f"--batches={','.join(map(str, a.batches))}",
            f"--width={a.width}", f"--repeats={a.repeats}",
            f"--sweep-batches={a.sweep_batches}",
            f"--pgd-steps={a.pgd_steps}", f"--impls={','.join(a.impls)}"]
  out = {"argv": sys.argv, "cores": os.cpu_count(),
         "load_average_at_start": os.getloadavg()}
  if not a.skip_layers:
    layers = run_worker("layers", common)  # one device: per-op lowering
    out["layers"] = layers
    print("| batch | in -> out, size, kernel/stride (x count) | "
          + " | ".join(f"{i} ms" for i in a.impls) + " | first/best |")
    print("|---|---|" + "---|" * len(a.impls) + "---|")
    for r in layers:
      ms = [r[f"ms_{i}"] for i in a.impls]
      print(f"| {r['batch']} | {r['in']}->{r['out']}, {r['size']}, "
            f"{r['kernel']}/{r['stride']} (x{r['count']}) | "
            + " | ".join(f"{m:.2f}" for m in ms)
            + f" | {ms[0] / min(ms):.2f}x |")
    for batch in a.batches:
      rows = [r for r in layers if r["batch"] == batch]
      totals = {i: sum(r[f"ms_{i}"] * r["count"] for r in rows)
                for i in a.impls}
      print(f"batch {batch}: all convolutions of one forward+backward, ms: "
            + ", ".join(f"{i} {t:.1f}" for i, t in totals.items()))
      out[f"total_ms_batch{batch}"] = totals
    if os.path.dirname(a.out):
      os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
      json.dump(out, f, indent=2)
  if not a.skip_steps:
    steps = []
    for d in a.devices.split(","):
      steps += run_worker(f"steps:{d}", common)
    out["steps"] = steps
    print(f"| devices | batch | lowering | model step images/s | vs "
          f"{a.impls[0]} | PGD image·steps/s | vs {a.impls[0]} |")
    print("|---|---|---|---|---|---|---|")
    for r in steps:
      base = next(b for b in steps if b["devices"] == r["devices"]
                  and b["batch"] == r["batch"] and b["impl"] == a.impls[0])
      print(f"| {r['devices']} | {r['batch']} | {r['impl']} | "
            f"{r['model_images_per_s']:.0f} | "
            f"{r['model_images_per_s'] / base['model_images_per_s']:.2f}x | "
            f"{r['pgd_image_steps_per_s']:.0f} | "
            f"{r['pgd_image_steps_per_s'] / base['pgd_image_steps_per_s']:.2f}"
            "x |")
  out["load_average_at_end"] = os.getloadavg()
  if os.path.dirname(a.out):
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
  with open(a.out, "w") as f:
    json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
