"""Command line: the paper's table of one or more rows, from their runs' summary.json files.

  python -m skillearn_jax.table runs/q_darts2
  python -m skillearn_jax.table runs/row_darts2 runs/row_lpt --out=runs/tables

Writes table.md, table.csv and table.png (test error % mean ± std, parameters, search cost in
device-days, the published figure beside) to --out (default: the root when there is one, else
the current directory). Works on any runs, made by `skillearn_jax.row` or by hand; the
published figures come from a root's row.json. The work lives in `skillearn_jax.run.table`.
"""

import sys

from absl import app
from absl import flags

from skillearn_jax import config_check
from skillearn_jax.run import table

_OUT = flags.DEFINE_string('out', None, 'Directory for table.md, table.csv and table.png.')


def main(argv):
  roots = argv[1:]
  if not roots:
    raise app.UsageError('Give at least one ROOT: python -m skillearn_jax.table ROOT [ROOT ...]')
  out = _OUT.value or (roots[0] if len(roots) == 1 else '.')
  try:
    for path in table.write_tables(roots, out):
      print(f'table: {path}')
  except config_check.ConfigError as error:
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
