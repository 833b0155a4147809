"""Command line: one config, one workdir, one run.

  python -m skillearn_jax.main --config=configs/darts.py:quick --workdir=runs/quick
  python -m skillearn_jax.main --config=configs/darts.py:2nd --workdir=runs/d2 \\
      --config.data.name=cifar10 --config.seed=1

Running the same command on the same workdir resumes from its last
checkpoint. Flags only: everything else lives in `skillearn_jax.run`.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

import sys

from skillearn_jax import config_check
from skillearn_jax.data.tfds_source import DatasetUnavailableError
from skillearn_jax.run import host_memory
from skillearn_jax.run import loop
from skillearn_jax.run import runner
from skillearn_jax.run import workdir_lock
from skillearn_jax.run import xla_flags

xla_flags.apply_defaults()  # before JAX starts its backend

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'On a user error, print the traceback too.')
# What a user can mend (a config value, the data, the workdir, a run that went non-finite):
# one line naming it, exit status 2; the traceback only with --verbose.
USER_ERRORS = (
  config_check.ConfigError,
  DatasetUnavailableError,
  workdir_lock.WorkdirBusyError,
  loop.NonFiniteError,
)
_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file, optionally with a variant: FILE.py:VARIANT.', lock_config=True
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  print(f'JAX devices: {jax.devices()}; heap allocator: {host_memory.allocator()}', flush=True)
  try:
    runner.run(_CONFIG.value, _WORKDIR.value)
  except USER_ERRORS as error:
    if _VERBOSE.value:
      raise
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
