"""The battery's outputs: battery.json (every cell), battery.md (a table of
clean vs unlearnable accuracy at the last and the best epoch, and their gap,
per cell) and battery.png (a heat map of unlearnable-trained accuracy,
learners x defenses)."""

import os

from ue_jax.io import artifacts


def _pct(v) -> str:
  return f"{100 * v:.1f}"


def _best(r, side: str) -> str:
  return (f"{_pct(r[f'best_{side}_test_accuracy'])} "
          f"({r[f'best_{side}_epoch']})")


def table(summary) -> str:
  """The Markdown table of the cells (accuracies in %): each side's last
  epoch with its best epoch beside it."""
  lines = [
      f"Release: `{summary['release_path']}` (sha256 "
      f"{summary['release_sha256'][:12]}), {summary['epochs']} epochs per "
      f"training, {summary['test_size']} test images. Accuracies are clean "
      "test accuracy in % of the learner trained on the clean images "
      "(clean) and on the release (unlearnable), at the last epoch and at "
      "its best epoch (best, the epoch in brackets: early stopping); gap = "
      "clean - unlearnable at the last epoch.",
      "",
      "| learner | defense | clean | clean best (epoch) | unlearnable | "
      "unlearnable best (epoch) | gap | seconds |",
      "|---|---|---|---|---|---|---|---|"]
  for r in summary["cells"]:
    learner = f"{r['learner']}:{r['width']}"
    if r["status"] != "done":
      lines.append(f"| {learner} | {r['defense']} | not applicable: "
                   f"{r['reason']} | | | | | |")
      continue
    lines.append(
        f"| {learner} | {r['defense']} | {_pct(r['clean_test_accuracy'])} | "
        f"{_best(r, 'clean')} | {_pct(r['unlearnable_test_accuracy'])} | "
        f"{_best(r, 'unlearnable')} | {_pct(r['gap'])} | "
        f"{r['seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def heat_map(summary):
  """Unlearnable-trained accuracy per (learner, defense); each square also
  shows the clean-trained accuracy; n/a and untrained cells are blank."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  plt = artifacts.pyplot()

  cells = summary["cells"]
  learners = list(dict.fromkeys(f"{r['learner']}:{r['width']}" for r in cells))
  defenses = list(dict.fromkeys(r["defense"] for r in cells))
  grid = np.full((len(learners), len(defenses)), np.nan)
  fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(defenses),
                                  1.2 + 0.55 * len(learners)))
  for r in cells:
    i = learners.index(f"{r['learner']}:{r['width']}")
    j = defenses.index(r["defense"])
    if r["status"] == "done":
      grid[i, j] = r["unlearnable_test_accuracy"]
      ax.text(j, i, f"{_pct(r['unlearnable_test_accuracy'])}\n"
              f"({_pct(r['clean_test_accuracy'])})", ha="center",
              va="center", fontsize=7)
    else:
      ax.text(j, i, "n/a", ha="center", va="center", fontsize=7)
  im = ax.imshow(grid, cmap="RdYlGn_r", vmin=0.0, vmax=1.0, aspect="auto")
  ax.set_xticks(range(len(defenses)), defenses, rotation=45, ha="right",
                fontsize=8)
  ax.set_yticks(range(len(learners)), learners, fontsize=8)
  ax.set_title("accuracy trained on the release (clean-trained)",
               fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.03)
  fig.tight_layout()
  return fig


def write(folder: str, summary) -> dict:
  """Writes battery.json, battery.md and battery.png into `folder`."""
  return {
      "json": artifacts.save_json(os.path.join(folder, "battery.json"),
                                  summary),
      "md": artifacts.save_text(os.path.join(folder, "battery.md"),
                                table(summary)),
      "png": artifacts.save_figure(os.path.join(folder, "battery.png"),
                                   heat_map(summary)),
  }
