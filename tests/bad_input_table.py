"""Prints the bad-input cases of bad_input_test.py as a Markdown table, with
the error line the CLI gives for each (runs them all, about a second each).

  PYTHONPATH=. python -m tests.bad_input_table > docs_bad_input_table.md
"""

import tempfile

from tests import bad_input_test


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def markdown(fixtures) -> str:
  tmp = fixtures["tmp"]
  lines = [
      "Each row runs `python -m ue_jax.main --config=configs/test_tiny.py "
      "--workdir=DIR --stage=release` on tiny .npz data (the folder_ cases: "
      "on the small image trees they name) with the listed "
      "changes; every one exits with code 2, prints one `error:` line and "
      "leaves DIR as it was (absent, or unchanged). `$TMP` stands for the "
      "folder of the test files.",
      "",
      "| case | command-line overrides | error message |",
      "|---|---|---|"]
  for case in bad_input_test.CASES:
    proc = bad_input_test.run_case(case, fixtures)
    message = proc.stderr.strip().splitlines()[-1].replace(tmp, "$TMP")
    flags = [o.format(tmp="$TMP") for o in case.overrides]
    if case.stage != "release":
      flags.append(f"--stage={case.stage}")
    if case.config != "configs/test_tiny.py":
      flags.append(f"--config={case.config}")
    if case.workdir == "used":
      flags.append("(DIR made by a config with noise.eps=16/255)")
    elif case.workdir == "released":
      flags.append("(DIR holds a release of the same config with "
                   "partial.rate=1.0)")
    elif case.workdir == "file":
      flags.append("(DIR is a file)")
    shown = " ".join(f"`{f}`" if f.startswith(("-", "extra")) else f
                     for f in flags)
    lines.append(f"| {case.name} | {_cell(shown) or '(none)'} | "
                 f"{_cell(message)} (exit {proc.returncode}) |")
  return "\n".join(lines)


def main():
  with tempfile.TemporaryDirectory(prefix="ue_jax_table_") as tmp:
    print(markdown(bad_input_test.make_fixtures(tmp)))


if __name__ == "__main__":
  main()
