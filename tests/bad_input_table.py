"""The bad-input cases of bad_input_test.py as the Markdown table of
docs/errors.md, with the error line the CLI gives for each.

  PYTHONPATH=. python -m tests.bad_input_table           # print the table
  PYTHONPATH=. python -m tests.bad_input_table --write   # rewrite it in docs/errors.md

Runs every case (about a second each). bad_input_test checks each row of the
page against the run it makes, so the page cannot drift from the code.
"""

import sys
import tempfile

from tests import bad_input_test


def main():
  with tempfile.TemporaryDirectory(prefix="ue_jax_table_") as tmp:
    fixtures = bad_input_test.make_fixtures(tmp)
    rows = [bad_input_test.table_row(case, bad_input_test.run_case(
        case, fixtures), tmp) for case in bad_input_test.CASES]
  table = "\n".join(bad_input_test.TABLE_HEAD + rows)
  if "--write" in sys.argv[1:]:
    bad_input_test.write_table(table)
  else:
    print(table)


if __name__ == "__main__":
  main()
