"""Collects the results.json of several runs into a Markdown table and charts
(ue_jax/evaluation/report.py has what each file holds).

  python tools/report.py DIR... --out=PATH_PREFIX [--class_groups=0,1,...]

Bad input (a DIR without results.json, no runs) ends with one `error:` line
and exit code 2.
"""

import sys
from typing import List, Optional

from absl import app
from absl import flags

from ue_jax.evaluation import report
from ue_jax.runtime.errors import UEError

_OUT = flags.DEFINE_string("out", None, "Output path prefix: writes "
                           "PREFIX.md, PREFIX.png (and PREFIX_partial.png).")
_GROUPS = flags.DEFINE_list("class_groups", None, "A group number per class "
                            "(e.g. 0,1,0,0,0,2,0,2,3,2): adds each model's "
                            "accuracy at the level of groups.")


def parse_groups(values) -> Optional[List[int]]:
  if not values:
    return None
  try:
    return [int(v) for v in values]
  except ValueError:
    raise UEError(f"--class_groups={','.join(values)}: give one integer "
                  "group per class, comma-separated") from None


def main(argv):
  try:
    if not _OUT.value:
      raise UEError("--out=PATH_PREFIX is required")
    groups = parse_groups(_GROUPS.value)
    for kind, path in report.write(argv[1:], _OUT.value,
                            class_groups=groups).items():
      print(f"{kind}: {path}")
  except UEError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
