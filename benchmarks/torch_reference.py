"""PyTorch reference of the original sample-wise min-min loop, for timing.

A plain eager PyTorch (CPU, float32, NCHW) re-implementation of the authors'
sample-wise error-minimizing noise search (docs/method.md §1-2), with the
decisions ue_jax takes (docs/method.md, "Decisions"): the model always sees
clip(x + delta, 0, 1); model steps take full batches that wrap around the end
of the (unshuffled) data; the stop test is accuracy in eval mode on the
released images (clip, round to uint8, keep within the integer eps-ball).
The models have the same shapes, initialisation and BatchNorm settings as
ue_jax/models (resnet.py, small_cnn.py), so timings compare like with like.

It is a timing baseline, not part of the library. benchmarks/throughput.py
--torch=True times its PGD and model step beside ue_jax's and checks it
computes the same function (same_function below); on its own, the search
to the stop rule (from the repository root, with a venv TORCH_VENV holding
torch==2.13.0 and ue_jax):

  TORCH_VENV/bin/python benchmarks/torch_reference.py \
      --model=small_cnn --width=32 --size=1000 --max_rounds=8

Differences from the original that do not change the cost: the PGD takes
input gradients only (`torch.autograd.grad`), where the original's
`loss.backward()` also computed unused weight gradients; and batches are
sliced from in-memory tensors instead of coming from a DataLoader.
"""

import argparse
import contextlib
import dataclasses
import math
import time
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

BN_MOMENTUM = 0.1  # PyTorch convention (Flax momentum 0.9)
BN_EPS = 1e-5


# ------------------------------------------------------------------- models
class SameConv2d(nn.Conv2d):
  """Conv2d with TensorFlow/XLA "SAME" padding (extra pixel bottom/right).

  Only for the same-function check's contrast: ue_jax's ResNet pads as
  PyTorch's `padding=1` does, (1, 1); for stride 2 on an even input "SAME"
  pads (0, 1), which shifts the sampling grid by one pixel.
  """

  def forward(self, x):
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size),
                          reversed(self.stride)):
      out = math.ceil(size / s)
      total = max((out - 1) * s + k - size, 0)
      pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0)


def _conv(in_ch, out_ch, k, stride, xla_padding):
  if xla_padding:
    return SameConv2d(in_ch, out_ch, k, stride=stride, padding=0, bias=False)
  return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2,
                   bias=False)


def _bn(ch):
  return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN plus shortcut (1x1 conv + BN on a shape
  change), then ReLU."""

  def __init__(self, in_ch, out_ch, stride, xla_padding=False):
    super().__init__()
    self.conv1 = _conv(in_ch, out_ch, 3, stride, xla_padding)
    self.bn1 = _bn(out_ch)
    self.conv2 = _conv(out_ch, out_ch, 3, 1, xla_padding)
    self.bn2 = _bn(out_ch)
    self.shortcut = None
    if stride != 1 or in_ch != out_ch:
      self.shortcut = nn.Sequential(_conv(in_ch, out_ch, 1, stride, False),
                                    _bn(out_ch))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
  """CIFAR ResNet-18 (kuangliu): 3x3 stride-1 stem, no max-pool, stages of
  [2,2,2,2] BasicBlocks with w/2w/4w/8w channels, global average pooling,
  Linear head. `xla_padding=True`: XLA's "SAME" padding instead of
  ue_jax's (and PyTorch's) symmetric one."""

  def __init__(self, in_channels, num_classes, width=64, xla_padding=False):
    super().__init__()
    self.conv1 = _conv(in_channels, width, 3, 1, xla_padding)
    self.bn1 = _bn(width)
    blocks, ch = [], width
    for stage in range(4):
      for block in range(2):
        out = width * 2**stage
        stride = 2 if stage > 0 and block == 0 else 1
        blocks.append(BasicBlock(ch, out, stride, xla_padding))
        ch = out
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(ch, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.blocks(x)
    return self.fc(x.mean(dim=(2, 3)))


class SamePool2d(nn.Module):
  """2x2 stride-2 pooling with XLA "SAME" padding: odd sizes get one padded
  row/column at the bottom/right (-inf for max; 0, counted, for average,
  as Flax's avg_pool with count_include_pad=True)."""

  def __init__(self, kind):
    super().__init__()
    self.kind = kind

  def forward(self, x):
    pads = [0, x.shape[3] % 2, 0, x.shape[2] % 2]
    if self.kind == "max":
      return F.max_pool2d(F.pad(x, pads, value=-math.inf), 2)
    return F.avg_pool2d(F.pad(x, pads), 2)


class SmallCNN(nn.Module):
  """3 x [conv3x3 (no bias) + BN + ReLU + pool2] with w/2w/4w channels,
  global average pooling, Linear head (the original's ToyModel shape)."""

  def __init__(self, in_channels, num_classes, width=32, pool="max"):
    super().__init__()
    layers, ch = [], in_channels
    for i in range(3):
      out = width * 2**i
      # ceil_mode max-pooling equals Flax's max_pool(padding="SAME")
      # (28 -> 14 -> 7 -> 4); average pooling needs the padded form.
      pool_layer = (nn.MaxPool2d(2, ceil_mode=True) if pool == "max"
                    else SamePool2d("avg"))
      layers += [nn.Conv2d(ch, out, 3, padding=1, bias=False), _bn(out),
                 nn.ReLU(inplace=True), pool_layer]
      ch = out
    self.features = nn.Sequential(*layers)
    self.fc = nn.Linear(ch, num_classes)

  def forward(self, x):
    return self.fc(self.features(x).mean(dim=(2, 3)))


def get_model(name: str, *, in_channels: int, num_classes: int, width: int,
              xla_padding: bool = False) -> nn.Module:
  """The torch twin of `ue_jax.models.get_model(name, ...)`."""
  if name == "resnet18":
    return ResNet18(in_channels, num_classes, width, xla_padding)
  if name in ("small_cnn", "small_cnn_avg"):
    return SmallCNN(in_channels, num_classes, width,
                    "avg" if name == "small_cnn_avg" else "max")
  raise ValueError(f"unknown model {name!r}")


def load_flax_variables(model: nn.Module, variables) -> None:
  """Copies ue_jax (Flax) params and batch_stats into the torch twin.

  `variables` is {"params": ..., "batch_stats": ...} with array leaves
  (numpy or jax). Used to check that both compute the same function.
  """
  params = variables["params"]
  stats = variables.get("batch_stats", {})

  def t(a):
    return torch.from_numpy(np.array(a, dtype=np.float32))

  def conv(dst, src):
    dst.weight.data.copy_(t(src["kernel"]).permute(3, 2, 0, 1))  # HWIO->OIHW

  def bn(dst, p, s):
    dst.weight.data.copy_(t(p["scale"]))
    dst.bias.data.copy_(t(p["bias"]))
    dst.running_mean.copy_(t(s["mean"]))
    dst.running_var.copy_(t(s["var"]))

  def dense(dst, src):
    dst.weight.data.copy_(t(src["kernel"]).T)
    dst.bias.data.copy_(t(src["bias"]))

  if isinstance(model, ResNet18):
    conv(model.conv1, params["Conv_0"])
    bn(model.bn1, params["BatchNorm_0"], stats["BatchNorm_0"])
    for i, block in enumerate(model.blocks):
      p, s = params[f"BasicBlock_{i}"], stats[f"BasicBlock_{i}"]
      conv(block.conv1, p["Conv_0"])
      bn(block.bn1, p["BatchNorm_0"], s["BatchNorm_0"])
      conv(block.conv2, p["Conv_1"])
      bn(block.bn2, p["BatchNorm_1"], s["BatchNorm_1"])
      if block.shortcut is not None:
        conv(block.shortcut[0], p["Conv_2"])
        bn(block.shortcut[1], p["BatchNorm_2"], s["BatchNorm_2"])
  elif isinstance(model, SmallCNN):
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    for i, (c, b) in enumerate(zip(convs, norms)):
      conv(c, params[f"Conv_{i}"])
      bn(b, params[f"BatchNorm_{i}"], stats[f"BatchNorm_{i}"])
  else:
    raise ValueError(f"cannot load Flax variables into {type(model)}")
  dense(model.fc, params["Dense_0"])


# -------------------------------------------------------- steps of the loop
def make_optimizer(model: nn.Module, *, lr=0.1, momentum=0.9,
                   weight_decay=5e-4) -> torch.optim.Optimizer:
  """SGD with coupled weight decay on all parameters (BN and biases too)."""
  return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                         weight_decay=weight_decay)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
  return images_u8.float() / 255.0


def model_step(model, opt, x, y, *, grad_clip=5.0) -> float:
  """One SGD step on a (perturbed) float batch, BatchNorm in train mode."""
  model.train()
  opt.zero_grad(set_to_none=True)
  loss = F.cross_entropy(model(x), y)
  loss.backward()
  if grad_clip > 0:
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
  opt.step()
  return loss.item()


@contextlib.contextmanager
def frozen(model: nn.Module):
  """Eval mode, no parameter gradients; restores requires_grad after."""
  flags = [p.requires_grad for p in model.parameters()]
  model.eval()
  for p in model.parameters():
    p.requires_grad_(False)
  try:
    yield model
  finally:
    for p, f in zip(model.parameters(), flags):
      p.requires_grad_(f)


def min_min_pgd(model, x, y, delta, *, eps, step_size, num_steps):
  """K sign-gradient descent steps from a warm start (docs/method.md §2).

  x' = clip01(x + delta); each step x' <- x' - alpha*sign(grad),
  eta = clip(x' - x, -eps, eps), x' = clip01(x + eta). Returns eta (the
  original stores it before the final clip01; the model and the release
  only ever see clip01(x + eta), so ue_jax's clipped delta is equivalent).
  Call under `frozen(model)`.
  """
  x_adv = torch.clamp(x + delta, 0.0, 1.0)
  eta = delta
  for _ in range(num_steps):
    x_adv.requires_grad_(True)
    loss = F.cross_entropy(model(x_adv), y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    with torch.no_grad():
      x_adv = x_adv - step_size * grad.sign()
      eta = torch.clamp(x_adv - x, -eps, eps)
      x_adv = torch.clamp(x + eta, 0.0, 1.0)
  return eta.detach()


def release_images(x_u8: torch.Tensor, delta: torch.Tensor, *, eps: float
                   ) -> torch.Tensor:
  """uint8 release: round(clip(x + 255 delta)), kept within the integer
  eps-ball (ue_jax.core.noise.release_images with paper_release=False)."""
  x = x_u8.float()
  q = torch.round(torch.clamp(x + delta * 255.0, 0.0, 255.0))
  m = math.floor(eps * 255.0 + 1e-6)
  return torch.clamp(q, min=x - m, max=x + m).to(torch.uint8)


@torch.no_grad()
def release_accuracy(model, images_u8, labels, delta, *, eps, batch_size
                     ) -> float:
  """Eval-mode accuracy on the released images, over all N (the stop test)."""
  model.eval()
  correct = 0
  for start in range(0, len(labels), batch_size):
    rows = slice(start, start + batch_size)
    x = to_float(release_images(images_u8[rows], delta[rows], eps=eps))
    correct += int((model(x).argmax(1) == labels[rows]).sum())
  return correct / len(labels)


def cycle_batches(n: int, batch_size: int,
                  order: Optional[np.ndarray] = None) -> Iterator[np.ndarray]:
  """Endless full batches over `order` (default 0..n-1), wrapping across
  epochs (as ue_jax.training.train.cycle_batches)."""
  walk = np.arange(n) if order is None else np.asarray(order, np.int64)
  buffer = np.zeros((0,), np.int64)
  while True:
    while len(buffer) < batch_size:
      buffer = np.concatenate([buffer, walk])
    yield buffer[:batch_size]
    buffer = buffer[batch_size:]


# ------------------------------------------------------------- the search
@dataclasses.dataclass
class MinMinConfig:
  """Sample-wise min-min settings; defaults are the paper's CIFAR-10 ones."""
  eps: float = 8 / 255
  step_size: float = 0.8 / 255
  num_steps: int = 20          # K
  train_steps: int = 10        # M
  batch_size: int = 512
  eval_batch_size: int = 512
  lr: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  grad_clip: float = 5.0
  stop_accuracy: float = 0.99
  min_rounds: int = 1
  max_rounds: int = 50


def to_tensors(images_u8: np.ndarray, labels: np.ndarray):
  """uint8 NHWC numpy -> uint8 NCHW tensor, and int64 labels."""
  x = torch.from_numpy(np.ascontiguousarray(images_u8.transpose(0, 3, 1, 2)))
  return x, torch.from_numpy(np.asarray(labels, np.int64))


def generate(model: nn.Module, images_u8: np.ndarray, labels: np.ndarray,
             cfg: MinMinConfig, log: Optional[Callable[[str], None]] = None,
             order: Optional[np.ndarray] = None) -> Dict:
  """Runs the sample-wise min-min search from zero noise.

  Args:
    model: a freshly initialised model (trained in place).
    images_u8: uint8 [N, H, W, C] training images.
    labels: int labels [N].
    cfg: the search settings.
    log: optional callable taking one line per round.
    order: the model steps' walk over the rows (default: as stored).

  Returns:
    A dict like ue_jax.search.generate.run's: rounds, stop_reached,
    generation_seconds, final_train_accuracy_on_release, plus per-round
    seconds and accuracies and the noise (float32 [N, H, W, C]).
  """
  x_all, y_all = to_tensors(images_u8, labels)
  n = len(y_all)
  delta = torch.zeros(x_all.shape, dtype=torch.float32)
  opt = make_optimizer(model, lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay)
  model_rows = cycle_batches(n, cfg.batch_size, order)
  round_seconds: List[float] = []
  round_acc: List[float] = []
  start = time.perf_counter()
  reached, acc, rnd = False, 0.0, 0
  for rnd in range(1, cfg.max_rounds + 1):
    t0 = time.perf_counter()
    # (a) M model steps on clip(x + delta), BatchNorm in train mode.
    for _ in range(cfg.train_steps):
      rows = torch.from_numpy(next(model_rows))
      x = torch.clamp(to_float(x_all[rows]) + delta[rows], 0.0, 1.0)
      model_step(model, opt, x, y_all[rows], grad_clip=cfg.grad_clip)
    # (b) K PGD steps on every example, unshuffled batches, eval mode.
    with frozen(model):
      for s in range(0, n, cfg.batch_size):
        rows = slice(s, s + cfg.batch_size)
        delta[rows] = min_min_pgd(
            model, to_float(x_all[rows]), y_all[rows], delta[rows],
            eps=cfg.eps, step_size=cfg.step_size, num_steps=cfg.num_steps)
    # (c) Stop test on the released images, eval mode.
    acc = release_accuracy(model, x_all, y_all, delta, eps=cfg.eps,
                           batch_size=cfg.eval_batch_size)
    round_seconds.append(time.perf_counter() - t0)
    round_acc.append(acc)
    if log is not None:
      log(f"torch round {rnd}: accuracy on release {acc:.4f} "
          f"(stop at {cfg.stop_accuracy}), {round_seconds[-1]:.1f} s")
    reached = acc >= cfg.stop_accuracy and rnd >= cfg.min_rounds
    if reached:
      break
  seconds = time.perf_counter() - start
  return {"rounds": rnd, "stop_reached": bool(reached),
          "generation_seconds": seconds,
          "final_train_accuracy_on_release": acc,
          "round_seconds": round_seconds, "round_accuracy": round_acc,
          "noise_max_abs": float(delta.abs().max()),
          "noise": delta.permute(0, 2, 3, 1).numpy()}


# ------------------------------------------------------------ same function
def same_function(name: str, width: int, shape, n: int = 4) -> dict:
  """The largest |logit difference| between ue_jax's Flax model `name`
  (float32, input `shape` HWC, 10 classes) and this twin loaded with the
  Flax weights, on `n` random images, eval and train mode, for the twin in
  PyTorch's symmetric padding (its default, and ue_jax's) and in XLA's
  "SAME" one (differs at stride 2); and the largest |logit|, for scale."""
  # pylint: disable=g-import-not-at-top
  import jax
  from ue_jax.models import get_model as flax_model
  # pylint: enable=g-import-not-at-top
  x = np.random.default_rng(1).random((n, *shape), dtype=np.float32)
  model = flax_model(name, num_classes=10, width=width)
  variables = model.init(jax.random.key(0), x, train=False)
  ours = {"eval": model.apply(variables, x, train=False),
          "train": model.apply(variables, x, train=True,
                               mutable=["batch_stats"])[0]}
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  out = {"logit_scale": float(np.abs(ours["eval"]).max())}
  for label, xla in (("xla_padding", True), ("torch_padding", False)):
    twin = get_model(name, in_channels=shape[-1], num_classes=10,
                     width=width, xla_padding=xla)
    load_flax_variables(twin, jax.device_get(variables))
    with torch.no_grad():
      out[label] = {mode: float(np.abs(
          getattr(twin, mode)()(xt).numpy() - np.asarray(ours[mode])).max())
                    for mode in ("eval", "train")}
  return out


# -------------------------------------------------------------------- CLI
def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="small_cnn")
  p.add_argument("--width", type=int, default=32)
  p.add_argument("--size", type=int, default=1000,
                 help="stratified Fashion-MNIST subset (seed 0)")
  p.add_argument("--eps", type=float, default=16.0, help="0-255 units")
  p.add_argument("--step_size", type=float, default=1.6, help="0-255 units")
  p.add_argument("--num_steps", type=int, default=20)
  p.add_argument("--train_steps", type=int, default=10)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--stop", type=float, default=0.99)
  p.add_argument("--max_rounds", type=int, default=8)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--train_npz", default="",
                 help="training .npz (images uint8 NHWC, labels) to use "
                 "instead of Fashion-MNIST, e.g. a decoded CIFAR-10")
  p.add_argument("--folder", default="",
                 help="an image-folder tree or .tar/.tar.gz of one (ue_jax's "
                 "data.source=folder, same class order and subset), e.g. "
                 "CIFAR-10")
  p.add_argument("--model_order", default="stored",
                 choices=("stored", "shuffled"),
                 help="the model steps' walk (ue_jax's generate.model_order, "
                 "same permutation for the same --seed)")
  p.add_argument("--json_out", default="", help="write the summary here")
  a = p.parse_args()
  import json  # pylint: disable=g-import-not-at-top
  from ue_jax.io import data as data_lib  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(a.threads)
  if a.folder:
    train, _ = data_lib.load_folder("folder", path=a.folder)
  elif a.train_npz:
    train = data_lib.load_npz(a.train_npz, None, "npz")
  else:
    train, _ = data_lib.load("fashion_mnist", source="idx")
  train = data_lib.stratified_subset(train, a.size, seed=0)
  order = data_lib.walk_order(len(train), kind=a.model_order, seed=a.seed)
  torch.manual_seed(a.seed)
  model = get_model(a.model, in_channels=train.images.shape[-1],
                    num_classes=train.num_classes, width=a.width)
  cfg = MinMinConfig(eps=a.eps / 255, step_size=a.step_size / 255,
                     num_steps=a.num_steps, train_steps=a.train_steps,
                     batch_size=a.batch, eval_batch_size=a.batch,
                     stop_accuracy=a.stop, max_rounds=a.max_rounds)
  out = generate(model, train.images, train.labels, cfg, log=print,
                 order=order)
  out.pop("noise")
  print(out)
  if a.json_out:
    with open(a.json_out, "w") as f:
      json.dump({"args": vars(a), **out}, f, indent=1)


if __name__ == "__main__":
  main()
