"""Collects the results.json of several runs into a Markdown table and charts.

  python tools/report.py DIR... --out=PATH_PREFIX

Writes
- PATH_PREFIX.md: one row per run (noise type, layout, poison rate, clean test
  accuracy after training on the clean images, on the release, and on the
  clean remainder alone where the run has one);
- PATH_PREFIX.png: a bar chart of those accuracies per run, chance marked;
- PATH_PREFIX_partial.png (and a second table in the .md) when runs of one
  noise type and layout hold several poison rates: accuracy against poison
  rate, beside training on the clean remainder only;
- in the .md, per-class test accuracy of every trained model (from the last
  epoch's confusion matrix in results.json; the columns named by the first
  run's `class_names`, or numbered) and, with
  `--class_groups=g0,g1,...` (a group number per class), the fraction of test
  images predicted inside their true class's group (e.g. Fashion-MNIST's
  tops, trousers, footwear and bags: 0,1,0,0,0,2,0,2,3,2).
Bad input (a DIR without results.json, no runs) ends with one `error:` line
and exit code 2.
"""

import collections
import os
from typing import Dict, List, Optional

import numpy as np

from ue_jax.io import artifacts
from ue_jax.io import data as data_lib
from ue_jax.evaluation import evaluate
from ue_jax.runtime.errors import UEError

KIND_NAMES = {"error_min": "error-minimizing", "error_max": "error-maximizing",
              "random": "random", "ar": "autoregressive",
              "lsp": "linearly separable patches", "ops": "one-pixel"}
SHORT = {"error_min": "error-min", "error_max": "error-max", "random": "random",
         "samplewise": "sample-wise", "classwise": "class-wise"}


def load_row(path: str) -> Dict[str, object]:
  """The report's fields of one run (a workdir or its results.json)."""
  file = path if path.endswith(".json") else os.path.join(path, "results.json")
  results = artifacts.load_json(file)
  if not isinstance(results, dict):
    raise UEError(f"no results.json at {file}; give the workdirs of finished "
                  "runs")
  config = results.get("config", {})
  rate = results.get("poison_rate",
                     config.get("partial", {}).get("rate", 1.0))
  classes = results.get("num_classes") or data_lib.NUM_CLASSES.get(
      results.get("dataset"), 10)
  folder = os.path.dirname(os.path.abspath(file))
  groups = results.get("protected_classes_test_accuracy", {})
  return {"run": os.path.basename(folder), "path": folder,
          "config": results.get("config_name", ""),
          "kind": results.get("noise_kind", "error_min"),
          "layout": results.get("noise_layout", "samplewise"),
          "poison_rate": float(rate), "num_classes": int(classes),
          "clean": results.get("clean_test_accuracy"),
          "unlearnable": results.get("unlearnable_test_accuracy"),
          "remainder": results.get("clean_remainder_test_accuracy"),
          "confusion": results.get("confusion", {}),
          "class_names": results.get("class_names") or [],
          "protected_classes": groups.get("unlearnable"),
          "protected_classes_remainder": groups.get("clean_remainder")}


def _cell(value: Optional[float]) -> str:
  return "—" if value is None else f"{value:.3f}"


def table(rows: List[dict]) -> str:
  """The Markdown table of all runs."""
  protected = any(r["protected_classes"] is not None for r in rows)
  head = ["run", "noise", "layout", "poison rate", "trained on clean",
          "trained on release", "clean remainder only"]
  if protected:
    head.append("protected classes (release / remainder)")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["run"], KIND_NAMES.get(r["kind"], r["kind"]), r["layout"],
             f"{r['poison_rate']:.2f}", _cell(r["clean"]),
             _cell(r["unlearnable"]), _cell(r["remainder"])]
    if protected:
      cells.append(f"{_cell(r['protected_classes'])} / "
                   f"{_cell(r['protected_classes_remainder'])}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def group_accuracy(confusion, groups) -> float:
  """Fraction of examples predicted in their true class's group."""
  m = np.asarray(confusion, np.float64)
  g = np.asarray(groups)
  return float(m[g[:, None] == g[None, :]].sum() / m.sum())


def per_class_table(rows: List[dict], groups=None) -> str:
  """Per-class test accuracy of each run's trained models (Markdown), with
  the group accuracy when `groups` is given; "" when no run has them."""
  lines = []
  for r in rows:
    for name, m in sorted(r["confusion"].items()):
      m = np.asarray(m, np.float64)
      if groups is not None and len(groups) != len(m):
        raise UEError(f"--class_groups names {len(groups)} classes; run "
                      f"{r['run']} has {len(m)}")
      if not lines:
        names = r["class_names"]
        if len(names) != len(m):  # a results.json from before class names
          names = [str(c) for c in range(len(m))]
        head = (["run", "trained on"]
                + [str(c).replace("|", "\\|") for c in names]
                + ["all"] + (["group accuracy"] if groups else []))
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
      cells = ([r["run"], name] + [_cell(a) for a in evaluate.per_class(m)]
               + [_cell(np.trace(m) / m.sum())])
      if groups:
        cells.append(_cell(group_accuracy(m, groups)))
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def partial_series(rows: List[dict]) -> Dict[tuple, List[dict]]:
  """Runs grouped by (config, noise type, layout) with at least two poison
  rates, each sorted by rate."""
  groups = collections.defaultdict(list)
  for r in rows:
    groups[(r["config"], r["kind"], r["layout"])].append(r)
  return {k: sorted(v, key=lambda r: r["poison_rate"])
          for k, v in groups.items()
          if len({r["poison_rate"] for r in v}) >= 2}


def partial_table(series: Dict[tuple, List[dict]]) -> str:
  lines = []
  for (config, kind, layout), runs in series.items():
    lines += [f"{config or 'runs'} ({KIND_NAMES.get(kind, kind)}, {layout}):",
              "",
              "| poison rate | trained on release | clean remainder only | "
              "run |", "|---|---|---|---|"]
    lines += [f"| {r['poison_rate']:.2f} | {_cell(r['unlearnable'])} | "
              f"{_cell(r['remainder'])} | {r['run']} |" for r in runs]
    lines.append("")
  return "\n".join(lines)


def bar_chart(rows: List[dict]):
  plt = artifacts.pyplot()
  fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 1.5), 3.8))
  width = 0.27
  bars = (("clean", "trained on clean", "#9ecae1"),
          ("unlearnable", "trained on release", "#d62728"),
          ("remainder", "clean remainder only", "#7f7f7f"))
  for b, (key, label, color) in enumerate(bars):
    xs = [i + (b - 1) * width for i, r in enumerate(rows)
          if r[key] is not None]
    ys = [r[key] for r in rows if r[key] is not None]
    if ys:
      drawn = ax.bar(xs, ys, width, label=label, color=color)
      ax.bar_label(drawn, fmt="%.2f", fontsize=6, padding=1)
  ax.axhline(1.0 / rows[0]["num_classes"], color="black", ls="--", lw=1,
             label=f"chance (1/{rows[0]['num_classes']})")
  ax.set_xticks(range(len(rows)))
  ax.set_xticklabels(
      [f"{r['run']}\n{SHORT.get(r['kind'], r['kind'])}, "
       f"{SHORT.get(r['layout'], r['layout'])}"
       + (f"\nrate {r['poison_rate']:.2f}" if r["poison_rate"] < 1 else "")
       for r in rows], fontsize=6)
  ax.set_ylabel("clean test accuracy")
  ax.set_ylim(0, 1.05)
  ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
            ncol=4, frameon=False)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  return fig


def partial_chart(series: Dict[tuple, List[dict]], num_classes: int):
  plt = artifacts.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for (config, kind, layout), runs in series.items():
    name = config or f"{KIND_NAMES.get(kind, kind)}, {layout}"
    pts = [(r["poison_rate"], r["unlearnable"]) for r in runs
           if r["unlearnable"] is not None]
    line = None
    if pts:
      line, = ax.plot(*zip(*pts), marker="o",
                      label=f"trained on release ({name})")
    rem = [(r["poison_rate"], r["remainder"]) for r in runs
           if r["remainder"] is not None]
    if rem:
      ax.plot(*zip(*rem), marker="s", ls="--",
              color=line.get_color() if line else None,
              label=f"clean remainder only ({name})")
  ax.axhline(1.0 / num_classes, color="black", ls=":", lw=1, label="chance")
  ax.set_xlabel("poison rate (fraction of training images protected)")
  ax.set_ylabel("clean test accuracy")
  ax.set_ylim(0, 1.05)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def write(paths: List[str], out: str, *, class_groups=None) -> Dict[str, str]:
  """Writes the report for the runs at `paths`; returns what it wrote."""
  if not paths:
    raise UEError("no runs given; usage: python tools/report.py DIR... "
                  "--out=PATH_PREFIX")
  rows = [load_row(p) for p in paths]
  written = {}
  text = ["# Results", "", table(rows), ""]
  written["chart"] = artifacts.save_figure(out + ".png", bar_chart(rows))
  text += [f"![accuracy]({os.path.basename(out)}.png)", ""]
  series = partial_series(rows)
  if series:
    written["partial_chart"] = artifacts.save_figure(
        out + "_partial.png", partial_chart(series, rows[0]["num_classes"]))
    text += ["## Partial protection", "", partial_table(series),
             f"![partial]({os.path.basename(out)}_partial.png)", ""]
  per_class = per_class_table(rows, class_groups)
  if per_class:
    text += ["## Per-class test accuracy (last epoch)", "", per_class, ""]
  written["table"] = artifacts.save_text(out + ".md", "\n".join(text))
  return written
