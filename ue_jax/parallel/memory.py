"""The memory plan of a run: bytes per device before it starts.

Per device: the shard of the uint8 training images (N_pad / D rows,
device_data.py), the noise shard (N_pad / D rows in the storage dtype;
class-wise noise, one row per class, is replicated whole on every device),
the replicated params, optimizer state (SGD momentum: one slot) and batch
stats, and one batch's share of input rows (uint8 image + label, index,
mask). Activations and XLA's temporaries are not counted (they depend on the
model and the compiler; `jax.jit(...).lower(...).compile().memory_analysis()`
reports them for a given step). Per host (process): its block of the uint8
training images while it loads them (N_pad / P rows; an IDX or TFDS source
is read whole first, an .npz only for those rows), and one chunk of the
noise export. For sep the optimizer state is its ensemble, one slot per
member (search/targeted.py).

  python tools/memory_plan.py --n=50000 --shape=32,32,3 --classes=10 \
      --model=resnet18 --width=64 --batch=512 --devices=16,256 \
      --devices_per_host=4 --storage=float32,bfloat16,int8
"""

import functools
import math
from typing import Dict, Sequence

import jax
import jax.numpy as jnp

from ue_jax.core import noise as noise_lib
from ue_jax.models import get_model
from ue_jax.parallel import sharding

ITEMSIZE = {"float32": 4, "bfloat16": 2, "int8": 1}
ROW_EXTRA = 12  # int32 label, int32 index, float32 mask per batch row


@functools.lru_cache(maxsize=None)
def model_bytes(model: str, width: int, num_classes: int,
                image_shape: Sequence[int]):
  """(params, batch_stats) bytes of a model, from shapes only."""
  net = get_model(model, num_classes=num_classes, width=width)
  shapes = jax.eval_shape(lambda: net.init(
      jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))

  def size(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  return size(shapes["params"]), size(shapes.get("batch_stats", {}))


def plan(*, n: int, image_shape: Sequence[int], num_classes: int,
         model: str, width: int, batch_size: int, devices: int,
         storage: str = "float32", optimizer_slots: int = 1,
         layout: str = "samplewise", processes: int = 1) -> Dict:
  """Bytes per device (and per host, of `processes`) of generation."""
  pixels = math.prod(image_shape)
  classwise = not noise_lib.samplewise(layout)
  n_pad = -(-n // devices) * devices
  rows = num_classes if classwise else n_pad
  shard = rows if classwise else rows // devices
  params, stats = model_bytes(model, width, num_classes, tuple(image_shape))
  out = {
      "n": n, "image_shape": tuple(image_shape), "devices": devices,
      "processes": processes, "storage": storage, "model": f"{model}/{width}",
      "data": n_pad // devices * pixels,
      "noise_total": rows * pixels * ITEMSIZE[storage],
      "noise": shard * pixels * ITEMSIZE[storage],
      "params": params, "opt_state": params * optimizer_slots,
      "batch_stats": stats,
      "batch": -(-batch_size // devices) * (pixels + ROW_EXTRA),
      "host_dataset": n_pad // processes * pixels,
      "host_export_chunk": (min(sharding.export_rows(pixels * 4),
                                num_classes if classwise else n)
                            * pixels * 4),
  }
  out["device_total"] = sum(out[k] for k in ("data", "noise", "params",
                                             "opt_state", "batch_stats",
                                             "batch"))
  return out


def plan_for_config(cfg, train, *, devices: int) -> Dict:
  return plan(n=len(train), image_shape=train.image_shape,
              num_classes=train.num_classes, model=cfg.model.name,
              width=cfg.model.width, batch_size=cfg.generate.batch_size,
              devices=devices, storage=cfg.noise.storage,
              optimizer_slots=(cfg.noise.sep_members
                               if cfg.noise.kind == "sep" else 1),
              layout=cfg.noise.layout, processes=jax.process_count())


def human(b: float) -> str:
  for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if b >= size:
      return f"{b / size:.2f} {unit}"
  return f"{int(b)} B"


def format_plan(p: Dict) -> str:
  return (f"{p['n']} x {'x'.join(map(str, p['image_shape']))} on "
          f"{p['devices']} devices, {p['processes']} process(es), noise in "
          f"{p['storage']}, {p['model']}\n"
          f"  per device: images {human(p['data'])} (uint8), noise "
          f"{human(p['noise'])} (of "
          f"{human(p['noise_total'])}), params {human(p['params'])}, "
          f"opt state {human(p['opt_state'])}, batch stats "
          f"{human(p['batch_stats'])}, batch {human(p['batch'])}; total "
          f"{human(p['device_total'])} + activations\n"
          f"  per host: its block of the images {human(p['host_dataset'])} "
          f"(uint8, while loading), noise export chunk "
          f"{human(p['host_export_chunk'])}")


def table(plans) -> str:
  """A markdown table of plans (one row each)."""
  lines = ["| images | devices | storage | images / device | noise / device "
           "| params + opt + stats / device | batch / device | total / device "
           "(no activations) | noise, all devices | images / host |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for p in plans:
    state = p["params"] + p["opt_state"] + p["batch_stats"]
    lines.append(
        f"| {p['n']}x{'x'.join(map(str, p['image_shape']))} | {p['devices']}"
        f" | {p['storage']} | {human(p['data'])} | {human(p['noise'])} | "
        f"{human(state)} | {human(p['batch'])} | {human(p['device_total'])} | "
        f"{human(p['noise_total'])} | {human(p['host_dataset'])} |")
  return "\n".join(lines)
