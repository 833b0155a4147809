"""Command line: one config, one workdir, one run.

  python -m skillearn_jax.main --config=configs/darts.py:quick --workdir=runs/quick
  python -m skillearn_jax.main --config=configs/darts.py:2nd --workdir=runs/d2 \\
      --config.data.name=cifar10 --config.seed=1
  python -m skillearn_jax.main --config=configs/darts.py:quick --describe

Running the same command on the same workdir resumes from its last checkpoint. --describe
lists every field of a config with its value, type, allowed values and meaning; the README's
configs table lists the configs and their variants. Flags only: everything else lives in
`skillearn_jax.run`.
"""

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from skillearn_jax import cli
from skillearn_jax.run import host_memory
from skillearn_jax.run import runner
from skillearn_jax.run import xla_flags

xla_flags.apply_defaults()  # before JAX starts its backend

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'On a user error, print the traceback too.')
_DESCRIBE = flags.DEFINE_bool(
  'describe', False, "List the config's fields (value, type, allowed values, meaning); run nothing."
)
_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file, optionally with a variant: FILE.py:VARIANT.', lock_config=True
)


def main(argv):
  if len(argv) > 1:
    raise cli.config_check.ConfigError(f'unexpected arguments: {argv[1:]}; flags take --name=value')
  config = cli.config_of(_CONFIG)
  if config is None:
    cli.fail('--config: required, e.g. --config=configs/darts.py:quick (see the README configs)')
  if _DESCRIBE.value:
    print(cli.describe(config, flags.FLAGS['config'].config_filename))
    return
  if not _WORKDIR.value:
    cli.fail('--workdir: required, a directory for checkpoints, metrics and plots')
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  print(f'JAX devices: {jax.devices()}; heap allocator: {host_memory.allocator()}', flush=True)
  runner.run(config, _WORKDIR.value)


if __name__ == '__main__':
  cli.run_main(main)
