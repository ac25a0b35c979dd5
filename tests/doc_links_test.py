"""The Markdown pages point at things that exist: every relative link and
image resolves from the page that holds it, and every config, script and
module a page names is in the repository (or the page says at which commit,
as `git show COMMIT:PATH`).

No JAX import: this runs in a second."""

import glob
import itertools
import os
import re

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `[text](target)` and `![alt](target)`, with an optional "title".
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# Repository paths named in the text (commands, prose, code blocks).
NAMED = re.compile(r"(?<![\w/.-])((?:configs|benchmarks|tools|launch)/"
                   r"[\w{},.*<>-]+\.(?:py|sh|sbatch))")
MODULE = re.compile(r"python3? -m ((?:ue_jax|tests)(?:\.\w+)+)")
# Named on purpose although absent: the bad-input table's missing config.
ABSENT_ON_PURPOSE = {"configs/no_such.py"}


def pages():
  """The Markdown files of the repository root and docs/."""
  return sorted(glob.glob(os.path.join(REPO, "*.md"))
                + glob.glob(os.path.join(REPO, "docs", "*.md")))


def prose_lines(text):
  """(line number, line) outside fenced code blocks, code spans removed."""
  fenced = False
  for number, line in enumerate(text.splitlines(), 1):
    if FENCE.match(line):
      fenced = not fenced
      continue
    if not fenced:
      yield number, CODE_SPAN.sub("", line)


def local_targets(text):
  """(line number, target without #fragment) of the relative links."""
  for number, line in prose_lines(text):
    for target in LINK.findall(line):
      if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(
          "#"):
        continue  # http(s), mailto and the like; anchors in the page
      target = target.split("#", 1)[0]
      if target:
        yield number, target


def expand_braces(path):
  """`a_{x,y}.py` -> [`a_x.py`, `a_y.py`] (shell brace expansion)."""
  parts = re.split(r"\{([^{}]*)\}", path)
  choices = [[p] if i % 2 == 0 else p.split(",")
             for i, p in enumerate(parts)]
  return ["".join(c) for c in itertools.product(*choices)]


def broken_links(path, text):
  """The links of `text` (the page at `path`) whose target is missing."""
  folder = os.path.dirname(path)
  return [f"{os.path.relpath(path, REPO)}:{number}: {target}"
          for number, target in local_targets(text)
          if not os.path.exists(os.path.normpath(os.path.join(folder,
                                                              target)))]


def missing_named(path, text):
  """The config, script and module paths `text` names that are neither in
  the repository nor pointed at in the history (`COMMIT:PATH`)."""
  where = os.path.relpath(path, REPO)
  missing = []
  for number, line in enumerate(text.splitlines(), 1):
    for named in NAMED.findall(line):
      if "<" in named or "*" in named or re.search(r"/[A-Z_]+\.", named):
        continue  # a pattern or a placeholder (configs/NAME.py)
      for one in expand_braces(named):
        if (one in ABSENT_ON_PURPOSE or os.path.exists(
            os.path.join(REPO, one))
            or re.search(r"\b[0-9a-f]{7,40}:" + re.escape(one), text)):
          continue
        missing.append(f"{where}:{number}: {one}")
    for module in MODULE.findall(line):
      base = os.path.join(REPO, *module.split("."))
      if not (os.path.isfile(base + ".py")
              or os.path.isfile(os.path.join(base, "__main__.py"))):
        missing.append(f"{where}:{number}: python -m {module}")
  return missing


class DocLinksTest(absltest.TestCase):

  def test_pages_found(self):
    names = {os.path.relpath(p, REPO) for p in pages()}
    self.assertContainsSubset({"README.md", os.path.join("docs",
                                                         "errors.md")},
                              names)

  def test_links_resolve_from_their_page(self):
    broken = []
    for path in pages():
      with open(path, encoding="utf-8") as f:
        broken += broken_links(path, f.read())
    self.assertEqual(broken, [], "links whose target does not exist, "
                     "relative to the page that holds them")

  def test_named_configs_scripts_and_modules_exist(self):
    missing = []
    for path in pages():
      with open(path, encoding="utf-8") as f:
        missing += missing_named(path, f.read())
    self.assertEqual(missing, [], "named but absent (and no COMMIT:PATH "
                     "in the page saying where the history has it)")

  def test_a_page_in_docs_resolves_links_from_docs(self):
    """The defect this test guards against: a link written relative to
    the repository root inside a page in docs/."""
    page = os.path.join(REPO, "docs", "example.md")
    self.assertEqual(broken_links(page, "![a](docs/figure.png)"),
                     ["docs/example.md:1: docs/figure.png"])
    self.assertEqual(broken_links(page, "![a](figure.png) [b](../README.md"
                                  "#quick-start) [c](#x) [d](https://x.y)"),
                     [])
    self.assertEqual(broken_links(page, "```\n![a](nowhere.png)\n```\n"
                                  "`[b](nowhere.md)`"), [])

  def test_named_paths(self):
    page = os.path.join(REPO, "docs", "example.md")
    self.assertEqual(
        missing_named(page, "python benchmarks/gone.py --x\n"
                      "python -m ue_jax.nowhere\n"
                      "configs/cifar10_{samplewise,nothing}.py"),
        ["docs/example.md:1: benchmarks/gone.py",
         "docs/example.md:2: python -m ue_jax.nowhere",
         "docs/example.md:3: configs/cifar10_nothing.py"])
    self.assertEqual(
        missing_named(page, "python benchmarks/gone.py (git show "
                      "abc1234:benchmarks/gone.py); configs/NAME.py, "
                      "configs/fashion_mnist_<row>.py, python -m "
                      "ue_jax.main"), [])


if __name__ == "__main__":
  absltest.main()
