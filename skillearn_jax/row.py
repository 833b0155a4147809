"""Command line: one paper row, from its searches to its table, in one root.

  python -m skillearn_jax.row --row=configs/rows.py:darts_2nd_c10,quick --root=runs/q_darts2
  python -m skillearn_jax.row --row=configs/rows.py:il_darts_2nd_c100 --root=runs/il_c100 \\
      --executor=slurm --jobs=10 --row.slurm.partition=gpu

Runs every search (ROOT/search/seed_K), every evaluation of the chosen genotypes
(ROOT/eval/seed_K), then writes the table (ROOT/table.md, table.csv, table.png). Rerunning the
command resumes: complete runs are kept, the others resume from their checkpoints. A root made
by another row config is refused. Flags only: the work lives in `skillearn_jax.run.rows` and
`skillearn_jax.run.table`.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from skillearn_jax import config_check
from skillearn_jax.data.tfds_source import DatasetUnavailableError
from skillearn_jax.run import rows
from skillearn_jax.run import table
from skillearn_jax.run import xla_flags

xla_flags.apply_defaults()  # before JAX starts its backend (--executor=inline runs here)

_ROOT = flags.DEFINE_string('root', None, 'Directory of the row: search/, eval/, logs/, table.')
_EXECUTOR = flags.DEFINE_enum(
  'executor',
  'local',
  rows.EXECUTORS,
  'local: jobs on this machine; slurm: job arrays; inline: one after another in this process.',
)
_JOBS = flags.DEFINE_integer(
  'jobs',
  0,
  'Runs at a time. 0: one at a time with local, the row\'s slurm.array_parallelism on SLURM.',
)
_VERBOSE = flags.DEFINE_bool('verbose', False, 'On a user error, print the traceback too.')
# A bad row, root or data: one line, exit status 2. A failed run (rows.RowError): one line
# naming it and its log, exit status 1; rerunning the command resubmits it.
USER_ERRORS = (config_check.ConfigError, DatasetUnavailableError)
_ROW = config_flags.DEFINE_config_file(
  'row', None, 'Row config with its row: configs/rows.py:ROW[,quick].', lock_config=True
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    if _JOBS.value < 0:
      raise config_check.ConfigError(f'--jobs: {_JOBS.value} is not allowed; must be >= 0')
    rows.run_row(_ROW.value, _ROOT.value, executor=_EXECUTOR.value, jobs=_JOBS.value)
    for path in table.write_tables([_ROOT.value], _ROOT.value):
      print(f'table: {path}')
  except (*USER_ERRORS, rows.RowError) as error:
    if _VERBOSE.value:
      raise
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(1 if isinstance(error, rows.RowError) else 2)


def _check_row_flag(argv) -> None:
  """An unknown row is one line and exit status 2, not a flag-parsing traceback."""
  for arg in argv[1:]:
    if arg.startswith('--row='):
      try:
        rows.load_config(arg[len('--row=') :], '--row')
      except config_check.ConfigError as error:
        print(f'error: {error}', file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == '__main__':
  _check_row_flag(sys.argv)
  flags.mark_flags_as_required(['row', 'root'])
  app.run(main)
