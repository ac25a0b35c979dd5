"""SPMD over every device: the mesh, all shardings, and the jitted steps.

One 1-D mesh with axis `data` over all devices (of all processes), built once
from `cfg.mesh`. Global-view `jax.jit` with `in_shardings`/`out_shardings`
(axis type `Auto`, passed explicitly) does the partitioning:

  batch (image, label, index, mask)   P('data')  rows split over devices
  sample-wise noise [N_pad, H, W, C]  P('data')  N_pad / D rows per device
  dataset images [N_pad, H, W, C]     P('data')  as the noise (device_data.py)
  params, batch_stats, opt_state,
  step, rng, class-wise noise,
  metrics                             P()        replicated

Batch statistics and losses are computed over the global batch, so the math
does not depend on the device count; the floating-point sums run in another
order on another count, so the results agree within rounding (and a sign
of PGD near zero may flip), not bit for bit (tests/sharding_test.py checks 1
vs 8 devices and 1 vs 2 processes within its stated tolerances). XLA partitions the noise gather/scatter by the rows
each device owns: a masked local gather plus an all-reduce of one batch, never
an all-gather of the noise (checked in the compiled HLO). Auto rather than
Explicit axes: with in/out shardings on every jit the partitioner needs no
further annotation, where Explicit mode would need an `out_sharding` on each
gather and scatter of the noise inside the pure steps.

Rows: the noise holds N_pad = ceil(N / D) * D rows; the padding rows are never
read or written (a padded batch row's index is mapped to N_pad, out of range,
so `mode='fill'/'drop'` skips it). An unfinished search resumes only on the
device and process counts of its checkpoint (search/resume.py refuses
another); a finished one reruns its later stages on any count. Batch sizes
must be multiples of D.

Multi-process: every process runs the same program; each one hands only its
own rows of a batch to `jax.make_array_from_process_local_data`, and builds
the row-sharded arrays of a whole dataset (images, a noise read from file)
from its own block of rows (`put_rows`: the rows its devices hold). A batch's
images are gathered on the devices from host row numbers inside each step
(`gather_images`, device_data.py). The noise and the released images are
exported in chunks of at most `EXPORT_BYTES` gathered to all hosts (so no
host holds more than one chunk of them), of which process 0 writes. What the
processes must decide together (a checkpoint, a stop on a signal) rides in
the steps as votes (`agree`), so it needs no collective of its own.
"""

import functools
from typing import Callable, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ue_jax.runtime.errors import UEError

DATA = "data"
EXPORT_BYTES = 64 << 20  # the most bytes of rows per host transfer (export)


def make_mesh(data: int = 0) -> jax.sharding.Mesh:
  """A 1-D mesh `data` over the first `data` devices (0 = all of them)."""
  count = jax.device_count()
  size = data or count
  if size > count or (jax.process_count() > 1 and size != count):
    raise UEError(f"mesh.data={data} but there are {count} devices over "
                  f"{jax.process_count()} processes; use 0 (all devices)"
                  + (" or at most the device count"
                     if jax.process_count() == 1 else ""))
  return jax.make_mesh((size,), (DATA,), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:size])


class Step:
  """A jitted step that takes a host batch (numpy dict) and puts it on the
  mesh first. `jitted` is the `jax.jit` object (for cache inspection).

  With `full`, a batch with padding rows (mask 0) is refused (ValueError):
  the model step's BatchNorm statistics count every row.

  With `serial`, a call first waits for the previous call's output. Steps
  that return the state are ordered by it anyway; a step that does not (the
  accuracy sweep's eval step) would otherwise have several calls in flight
  at once, and with several devices in one process XLA:CPU can then run two
  of them on one device's worker threads, each blocked in its all-reduce
  waiting for the other device, which gets no thread: a deadlock that
  aborted runs with 2 devices on 2 cores (docs/operations.md).

  With `wait` (several CPU devices), every call waits for its own output
  before it returns, so no two calls of any steps overlap: the state orders
  the calls of the steps that return it, but one device may start the next
  call while another still runs the last, and two learner runs with 2
  devices on 2 loaded cores aborted in such a step's all-gather. It costs a
  host round trip per step, small against a CPU step; accelerators keep
  their queue. (The wait is on the fresh output: a kept reference to a
  state would be donated by the next step that takes it.)
  """

  def __init__(self, placement: "Placement", jitted, *, rows: int,
               rows_pad: int, serial: bool = False, wait: bool = False,
               full: bool = False):
    self.placement, self.jitted = placement, jitted
    self.rows, self.rows_pad = rows, rows_pad
    self.serial, self.wait, self.full, self._last = serial, wait, full, None

  def _put(self, batch):
    if self.full and not np.all(np.asarray(batch["mask"]) > 0):
      raise ValueError(f"{getattr(self.jitted, '__name__', 'step')} takes "
                       "full batches only (BatchNorm's batch statistics "
                       "would count the padding rows)")
    return self.placement.put_batch(batch, rows=self.rows,
                                    rows_pad=self.rows_pad)

  def __call__(self, state, batch):
    batch = self._put(batch)
    if self._last is not None:
      jax.block_until_ready(self._last)
    out = self.jitted(state, batch)
    if self.wait:
      jax.block_until_ready(out)
    elif self.serial:
      self._last = out
    return out

  def lower(self, state, batch):
    """`jax.jit`'s lowering for a host batch, as a call would put it on the
    mesh (for `.compile()`, `.cost_analysis()`, memory analysis)."""
    return self.jitted.lower(state, self._put(batch))


class Placement:
  """The shardings of one mesh and the helpers that use them."""

  def __init__(self, mesh: jax.sharding.Mesh):
    self.mesh = mesh
    self.size = mesh.shape[DATA]
    self.platform = mesh.devices.flat[0].platform
    self.rows = NamedSharding(mesh, P(DATA))   # batches, sample-wise noise
    self.replicated = NamedSharding(mesh, P())

  def padded(self, n: int) -> int:
    """`n` rounded up to a multiple of the device count."""
    return -(-n // self.size) * self.size

  def check_batch_size(self, field: str, size: int):
    if size % self.size:
      raise UEError(f"{field}={size} must be a multiple of the {self.size} "
                    f"devices of the mesh (e.g. {self.padded(size)})")

  # ---------------------------------------------------------------- state
  def state_shardings(self, state, *, samplewise: bool = True):
    """Replicated everywhere but a sample-wise noise (rows on `data`; its
    row count must be a multiple of the device count). Works on a state or
    on its `jax.eval_shape`. Class-wise noise (`samplewise=False`) is
    replicated."""
    shardings = jax.tree.map(lambda _: self.replicated, state)
    if samplewise and state.noise is not None:
      if state.noise.shape[0] % self.size:
        raise UEError(f"noise of {state.noise.shape[0]} rows cannot be split "
                      f"over {self.size} devices; pad it to "
                      f"{self.padded(state.noise.shape[0])}")
      shardings = shardings.replace(noise=self.rows)
    return shardings

  def create(self, make: Callable[..., object], *args,
             samplewise: bool = True):
    """Runs `make(*args)` (pure) jitted so that every leaf is born with its
    sharding; returns (state, shardings)."""
    shardings = self.state_shardings(jax.eval_shape(make, *args),
                                     samplewise=samplewise)
    return jax.jit(make, out_shardings=shardings)(*args), shardings

  # -------------------------------------------------------------- batches
  def local_rows(self, size: int) -> Tuple[int, int]:
    """[lo, hi): the rows of a `size`-row batch this process's devices
    hold."""
    slices = self.rows.addressable_devices_indices_map((size,)).values()
    lo = min(s[0].start or 0 for s in slices)
    hi = max(size if s[0].stop is None else s[0].stop for s in slices)
    if (hi - lo) * jax.process_count() != size:
      raise UEError("the mesh does not give each process one contiguous "
                    "block of batch rows")
    return lo, hi

  def put_batch(self, batch, *, rows: Optional[int] = None,
                rows_pad: Optional[int] = None):
    """A host batch as global arrays sharded on `data`; each process hands
    over only its own rows. With `rows_pad`, the index of padding rows
    (`rows` and above) becomes `rows_pad`, out of the padded noise's range."""
    size = len(batch["index"])
    self.check_batch_size("batch size", size)
    if rows_pad is not None and rows_pad != rows:
      index = np.asarray(batch["index"])
      batch = dict(batch, index=np.where(index >= rows, rows_pad, index)
                   .astype(index.dtype))
    lo, hi = self.local_rows(size)
    return {k: v if isinstance(v, jax.Array) else
            jax.make_array_from_process_local_data(
                self.rows, np.asarray(v)[lo:hi], np.shape(v))
            for k, v in batch.items()}

  def host_rows(self, array: jax.Array, rows) -> np.ndarray:
    """array[rows] for a few host row numbers, as numpy on every host."""
    index = self.replicate(np.asarray(rows, np.int32))
    return np.asarray(_take_fn(self.replicated)(array, index))

  # --------------------------------------------------------- placed arrays
  def put_rows(self, n: int, read: Callable[[int, int], np.ndarray], tail,
               dtype) -> jax.Array:
    """A global [padded(n), *tail] array sharded by rows, built from this
    process's block only: `read(lo, hi)` returns rows [lo, hi) (hi <= n) of
    the whole; rows n and above are zero. No host reads other rows."""
    n_pad = self.padded(n)
    lo, hi = self.local_rows(n_pad)
    block = np.zeros((hi - lo, *tail), dtype)
    if lo < n:
      block[:min(hi, n) - lo] = read(lo, min(hi, n))
    return jax.make_array_from_process_local_data(self.rows, block,
                                                  (n_pad, *tail))

  def replicate(self, array: np.ndarray) -> jax.Array:
    """A host array (the same on every process) replicated on the mesh."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, self.replicated,
                                        lambda index: array[index])

  # ---------------------------------------------------------------- steps
  def jit_step(self, fn, state_shardings, *, rows: int = 0,
               returns_state: bool = True, donate: bool = True,
               full_batches: bool = False) -> Step:
    """`fn(state, batch)` jitted over the mesh: state in/out with its
    shardings (donated), batch on `data`, metrics replicated. With
    `full_batches` (model steps) a padded batch is refused.

    The compiled program takes (state, host batch) and gives `fn` another
    batch. The host batch (device_data.DeviceData.batch, resume.Saver
    .add_votes) is {"images": the dataset's uint8 [N_pad, H, W, C] on the
    mesh, "rows": int32 [B] rows of it, "label": int32 [B], "index": int32
    [B] noise rows, "mask": float32 [B] (0 for padding), and with several
    processes "votes": int32 [B, k]}; `fn` sees {"image": images[rows]
    (`gather_images`), "label", "index", "mask"} and returns (state,
    metrics), or metrics alone when not `returns_state`; the program adds
    "votes" (their maximum over the batch, `agree`) to the metrics. A batch
    that carries "image" itself (a host Dataset) reaches `fn` as it is."""
    out = ((state_shardings, self.replicated) if returns_state
           else self.replicated)
    jitted = jax.jit(agree(gather_images(fn)),
                     in_shardings=(state_shardings, self.rows),
                     out_shardings=out,
                     donate_argnums=0 if (donate and returns_state) else ())
    return Step(self, jitted, rows=rows, rows_pad=self.padded(rows),
                serial=self.size > 1 and not returns_state,
                wait=self.size > 1 and self.platform == "cpu",
                full=full_batches)

  # --------------------------------------------------------------- export
  def host_chunks(self, array: jax.Array, n: int, *,
                  transform: Callable = lambda x: x,
                  chunk: Optional[int] = None
                  ) -> Iterator[Tuple[int, np.ndarray]]:
    """(start, rows) for the first `n` rows of a row-sharded array, one
    chunk (default `export_rows`) at a time, as numpy on every host (all
    processes must iterate)."""
    row = jax.eval_shape(transform, jax.ShapeDtypeStruct(
        (1, *array.shape[1:]), array.dtype))
    size = min(chunk or export_rows(row.size * row.dtype.itemsize),
               array.shape[0])
    take = _slice_fn(size, transform, self.replicated)
    for start in range(0, n, size):
      first = min(start, array.shape[0] - size)
      rows = np.asarray(take(array, jnp.int32(first)))
      yield start, rows[start - first:start - first + min(size, n - start)]


IMAGES, ROWS = "images", "rows"  # a batch's images as rows of a dataset
VOTES = "votes"  # int32 [B, k]: each process's votes, in its rows


def agree(fn):
  """`fn(state, batch)`, which also returns, for a batch that carries
  `VOTES` (int32 [B, k], each process filling its own rows of the batch
  with its votes), their maximum over all rows as `VOTES` in its metrics:
  one value, the same in every process, computed in the step's own program
  (no collective of its own, no host sync). Multi-process runs decide
  collective actions (a checkpoint, a stop) on it, so that every process
  takes them at the same batch. Keeps `fn`'s name."""
  def step(state, batch):
    if VOTES not in batch:
      return fn(state, batch)
    batch = dict(batch)
    agreed = jnp.max(batch.pop(VOTES), axis=0)
    out = fn(state, batch)
    if isinstance(out, tuple):
      return out[0], {**out[1], VOTES: agreed}
    return {**out, VOTES: agreed}
  step.__name__ = fn.__name__
  return step


def gather_images(fn):
  """`fn(state, batch)`, first turning a batch that carries `images` (a
  dataset's [N_pad, ...] images, sharded by rows) and `rows` (the batch's
  rows of it) into one with `image = images[rows]`, inside the same program
  (device_data.py). XLA partitions the gather by the rows each device owns:
  the row numbers are gathered, each device takes the rows it holds and one
  batch of images is reduced; the dataset never moves (checked in
  tests/sharding_test.py). One program per step, not a gather program
  beside it. Keeps `fn`'s name (for logs and compile counts)."""
  def step(state, batch):
    if IMAGES in batch:
      batch = dict(batch)
      images, rows = batch.pop(IMAGES), batch.pop(ROWS)
      image = jnp.take(images, rows, axis=0, mode="clip")
      batch = {**batch, "image": image}
    return fn(state, batch)
  step.__name__ = getattr(fn, "__name__", None) or getattr(
      getattr(fn, "func", None), "__name__", "step")
  return step


def export_rows(row_bytes: int) -> int:
  """Rows per export chunk: as many as fit in EXPORT_BYTES, at least one."""
  return max(1, EXPORT_BYTES // max(1, row_bytes))


@functools.lru_cache(maxsize=None)
def _take_fn(rows):
  return jax.jit(lambda a, i: jnp.take(a, i, axis=0, mode="clip"),
                 out_shardings=rows)


@functools.lru_cache(maxsize=None)
def _slice_fn(size: int, transform, replicated):
  return jax.jit(lambda a, s: transform(jax.lax.dynamic_slice_in_dim(
      a, s, size)), out_shardings=replicated)


def describe(placement: Placement) -> str:
  devices = jax.devices()
  return (f"mesh {dict(placement.mesh.shape)} over {placement.size} of "
          f"{len(devices)} {devices[0].platform} devices, "
          f"{jax.process_count()} process(es), this is process "
          f"{jax.process_index()} with {jax.local_device_count()} local")


def log_placement(placement: Placement):
  logging.info("%s", describe(placement))
