"""Prints the memory plan (bytes per device and per host) of a run's shapes
for several device counts and noise storages, before any run
(ue_jax/parallel/memory.py has what is counted).

  python tools/memory_plan.py --n=50000 --shape=32,32,3 --classes=10 \\
      --model=resnet18 --width=64 --batch=512 --devices=16,256 \\
      --devices_per_host=4 --storage=float32,bfloat16,int8
"""

from absl import app
from absl import flags

from ue_jax.parallel import memory

_N = flags.DEFINE_integer("n", None, "Training images.", lower_bound=1)
_SHAPE = flags.DEFINE_list("shape", None, "Image shape H,W,C.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Classes.")
_MODEL = flags.DEFINE_string("model", "resnet18", "Model name.")
_WIDTH = flags.DEFINE_integer("width", 64, "Model width.")
_BATCH = flags.DEFINE_integer("batch", 512, "Global batch size.")
_DEVICES = flags.DEFINE_list("devices", ["1"], "Device counts.")
_PER_HOST = flags.DEFINE_integer(
    "devices_per_host", 0, "Devices per process (a TPU VM: 4 chips); 0: one "
    "process for all.")
_STORAGE = flags.DEFINE_list("storage", ["float32"],
                             "Noise storages: float32, bfloat16, int8.")
flags.mark_flags_as_required(["n", "shape"])


def main(argv):
  del argv
  shape = tuple(int(s) for s in _SHAPE.value)
  plans = [memory.plan(n=_N.value, image_shape=shape,
                       num_classes=_CLASSES.value, model=_MODEL.value,
                       width=_WIDTH.value, batch_size=_BATCH.value,
                       devices=int(d), storage=s,
                       processes=-(-int(d) // (_PER_HOST.value or int(d))))
           for d in _DEVICES.value for s in _STORAGE.value]
  for q in plans:
    print(memory.format_plan(q))
  print(memory.table(plans))


if __name__ == "__main__":
  app.run(main)
