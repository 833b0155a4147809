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

from skillearn_jax.run import host_memory
from skillearn_jax.run import runner
from skillearn_jax.run import xla_flags

xla_flags.apply_defaults()  # before JAX starts its backend

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file, optionally with a variant: FILE.py:VARIANT.', lock_config=True
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  print(f'JAX devices: {jax.devices()}; heap allocator: {host_memory.allocator()}', flush=True)
  runner.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
