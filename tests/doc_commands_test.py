"""Every command the Markdown pages give still parses: the script it runs
exists (or the page names the commit that has it, as `COMMIT:PATH`), the
config file it names exists and builds (`--config=FILE:ARG` builds
get_config(ARG), as the CLI does), each `--config.a.b=...` override names
a field of that config, and each other `--flag` is defined by the command
it is passed to (`python -m ue_jax.main`, `python -m ue_jax.protect`,
`python tools/X.py`, `python benchmarks/X.py`).

Commands are read from fenced code blocks (with `\\` continuations and the
block's `NAME="..."` shell variables expanded) and from code spans in the
prose. No JAX import: the configs are plain ml_collections files and the
flags are read from each script's source.
"""

import functools
import importlib.util
import os
import re
import shlex
import sys

from absl.testing import absltest

from tests import doc_links_test

REPO = doc_links_test.REPO
COMMAND = re.compile(
    r"python3?\s+(-m\s+ue_jax\.(?:main|protect)|(?:tools|benchmarks)/\w+\.py)"
    r"(?=\s|$)")
ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=(\"[^\"]*\"|'[^']*'|\S*)"
                    r"\s*$")
DEFINE = re.compile(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']")
ARGPARSE = re.compile(r"add_argument\(\s*[\"']--([\w-]+)[\"']")
# absl's own flags, which every absl program takes.
ABSL_FLAGS = {"helpfull", "helpshort", "help", "logtostderr",
              "alsologtostderr", "verbosity", "v", "log_dir", "flagfile"}
# A placeholder a page uses for a path the reader supplies.
PLACEHOLDER = re.compile(r"[<>$]|\b[A-Z][A-Z0-9_]{2,}\b")
# Shown on purpose as refused: the bad-input table's missing config.
ABSENT_ON_PURPOSE = doc_links_test.ABSENT_ON_PURPOSE


def _blocks(text):
  """(first line number, lines) of the fenced code blocks of `text`."""
  block, start = None, 0
  for number, line in enumerate(text.splitlines(), 1):
    if doc_links_test.FENCE.match(line):
      if block is None:
        block, start = [], number + 1
      else:
        yield start, block
        block = None
    elif block is not None:
      block.append(line)


def _joined(lines):
  """(offset, logical line) with trailing-backslash continuations joined."""
  out, pending, first = [], "", 0
  for offset, line in enumerate(lines):
    if not pending:
      first = offset
    if line.rstrip().endswith("\\"):
      pending += line.rstrip()[:-1] + " "
      continue
    out.append((first, pending + line))
    pending = ""
  if pending:
    out.append((first, pending))
  return out


def _expand(line, variables):
  """`$NAME` / `${NAME}` replaced by the block's assignments (others
  left as they are)."""
  return re.sub(r"\$\{?([A-Za-z_]\w*)\}?",
                lambda m: variables.get(m.group(1), m.group(0)), line)


def commands(text):
  """(line number, command line starting at `python`) of every command."""
  for start, lines in _blocks(text):
    variables = {}
    for offset, line in _joined(lines):
      assign = ASSIGN.match(line)
      if assign:
        value = assign.group(2)
        if value[:1] in "\"'":
          value = value[1:-1]
        variables[assign.group(1)] = _expand(value, variables)
        continue
      line = _expand(line.split(" #", 1)[0], variables)
      for match in COMMAND.finditer(line):
        yield start + offset, line[match.start():]
  prose, fenced = [], False
  for number, line in enumerate(text.splitlines(), 1):
    if doc_links_test.FENCE.match(line):
      fenced = not fenced
    elif not fenced:
      prose.append((number, line))
  paragraph, first = [], 0
  for number, line in prose + [(0, "")]:
    if line.strip():
      first = first or number
      paragraph.append(line)
      continue
    joined = " ".join(paragraph)
    for span in re.findall(r"`([^`]+)`", joined):
      for match in COMMAND.finditer(span):
        yield first, span[match.start():]
    paragraph, first = [], 0


def _script(command):
  """The source file of the program a command line runs."""
  program = COMMAND.match(command).group(1)
  if program.startswith("-m"):
    return os.path.join(REPO, *program.split()[1].split(".")) + ".py"
  return os.path.join(REPO, program)


@functools.lru_cache(maxsize=None)
def defined_flags(script):
  with open(script, encoding="utf-8") as f:
    source = f.read()
  return set(DEFINE.findall(source)) | {
      a.replace("-", "_") for a in ARGPARSE.findall(source)} | ABSL_FLAGS


@functools.lru_cache(maxsize=None)
def load_config(path, arg=None):
  """get_config() of the config file at `path` (relative to the repo), or
  get_config(arg) for `--config=path:arg`."""
  spec = importlib.util.spec_from_file_location(
      "doc_config_" + re.sub(r"\W", "_", path), os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _has_field(config, dotted):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return False
    node = node[part]
  return True


def problems(command):
  """What in `command` does not exist (an empty list if all does)."""
  script = _script(command)
  if not os.path.isfile(script):
    return [f"no script {os.path.relpath(script, REPO)}"]
  try:
    words = shlex.split(command, comments=True)
  except ValueError as e:
    return [f"cannot split: {e}"]
  flags, config, fields, out = defined_flags(script), None, [], []
  default = {"protect.py": "configs/protect.py"}.get(os.path.basename(script))
  for word in words[1:]:
    if word in ("&&", "||", ";", "|") or word.startswith((">", "2>")):
      break  # the next command of the line (checked on its own)
    if not word.startswith("--"):
      continue
    name = word[2:].partition("=")[0].replace("-", "_")
    if name == "config":
      config = word[len("--config="):]
    elif name.startswith("config."):
      fields.append(name[len("config."):])
    elif name not in flags and not (name.startswith("no")
                                    and name[2:] in flags):
      out.append(f"--{name}: not a flag of {os.path.relpath(script, REPO)}")
  config = config or default
  path, _, arg = (config or "").partition(":")
  if path.endswith(".py") and not PLACEHOLDER.search(config):
    if path in ABSENT_ON_PURPOSE:
      return out
    if not os.path.isfile(os.path.join(REPO, path)):
      return out + [f"no config {path}"]
    try:
      c = load_config(path, arg or None)
    except (TypeError, ValueError) as e:  # what the CLI refuses, too
      return out + [f"--config={config}: {e}"]
    out += [f"--config.{f}: no such field in {config}" for f in fields
            if not _has_field(c, f)]
  elif fields and config is None:
    out.append("--config.* overrides without --config")
  return out


def page_problems(path):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  where = os.path.relpath(path, REPO)
  found = []
  for number, command in commands(text):
    script = os.path.relpath(_script(command), REPO)
    if not os.path.isfile(_script(command)) and re.search(
        r"\b[0-9a-f]{7,40}:" + re.escape(script), text):
      continue  # a script of the history, with the commit that has it
    found += [f"{where}:{number}: {p}   <- {command[:120]}"
              for p in problems(command)]
  return found


class DocCommandsTest(absltest.TestCase):

  def test_every_command_of_the_pages_parses(self):
    found = []
    for path in doc_links_test.pages():
      found += page_problems(path)
    self.assertEqual(found, [], "commands in the pages that name a missing "
                     "config, config field or flag")

  def test_the_pages_hold_commands(self):
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
      found = list(commands(f.read()))
    self.assertTrue(any("ue_jax.main" in c for _, c in found))
    self.assertTrue(any("ue_jax.protect" in c for _, c in found))

  def test_what_it_catches(self):
    page = "\n".join([
        "Run `python -m ue_jax.main --config=configs/test_tiny.py",
        "--config.noise.epss=1` or:", "", "```bash",
        'S="--config.battery.epochs=2 --config.battery.nothing=1"',
        "python -m ue_jax.main --config=configs/test_tiny.py \\",
        "    --workdir=w $S --no_such_flag --notensorboard",
        "python -m ue_jax.protect --input=a --config.protect.sise=3",
        "python tools/noise_stats.py --workdir=w --nope",
        "python -m ue_jax.main --config=configs/gone.py",
        "python -m ue_jax.main --config=configs/NAME.py --config.x.y=1",
        "python -m ue_jax.main --config=configs/fashion_mnist.py:variant=ar"
        " --config.noise.ar_l2_eps=2.0 --config.noise.ar_l2=2.0",
        "python -m ue_jax.main --config=configs/fashion_mnist.py:variant=x",
        "```"])
    found = [p for _, c in commands(page) for p in problems(c)]
    self.assertEqual(found, [
        "--no_such_flag: not a flag of ue_jax/main.py",
        "--config.battery.nothing: no such field in configs/test_tiny.py",
        "--config.protect.sise: no such field in configs/protect.py",
        "--nope: not a flag of tools/noise_stats.py",
        "no config configs/gone.py",
        "--config.noise.ar_l2: no such field in "
        "configs/fashion_mnist.py:variant=ar",
        "--config=configs/fashion_mnist.py:variant=x: config argument "
        "variant='x': choose one of samplewise, classwise, random, "
        "random_classwise, error_max, ar, partial, strongest",
        "--config.noise.epss: no such field in configs/test_tiny.py"])


if __name__ == "__main__":
  absltest.main()
