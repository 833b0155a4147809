"""What the library's commands share at the command line: errors a user can mend are one line.

This module owns the boundary between a user and a run: parsing the flags (an unknown config
field is named with its close matches, a config file that does not load says so), the user
errors that end a command with one line on stderr and exit status 2 (the traceback only with
`--verbose`), and `describe`, the table of a config's fields behind `--describe`. `run_main`
is `absl.app.run` with both.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from typing import Callable, Optional

from absl import app
from absl import flags

from skillearn_jax import config_check
from skillearn_jax import config_fields
from skillearn_jax.data.tfds_source import DatasetUnavailableError
from skillearn_jax.run import checkpoints
from skillearn_jax.run import loop
from skillearn_jax.run import workdir_lock

# What a user can mend (a config value, a path, the data, the workdir, its checkpoints, a run
# that went non-finite): one line naming it, exit status 2.
USER_ERRORS = (
  config_check.ConfigError,
  DatasetUnavailableError,
  workdir_lock.WorkdirBusyError,
  workdir_lock.WorkdirError,
  loop.NonFiniteError,
  checkpoints.CheckpointError,
)


def _verbose(argv) -> bool:
  return any(arg in ('--verbose', '--verbose=true', '--verbose=True') for arg in argv)


def fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a failure told in one line (`flag_error`)."""
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except  # absl and config overrides
    if _verbose(argv):
      raise
    fail(flag_error(argv, error))


def config_of(holder) -> object:
  """The value of a config flag, loaded on first use (ml_collections loads lazily): a file
  that does not load, or an override of an unknown field, is one line too."""
  try:
    config = holder.value
    if config is not None:
      config.keys()  # a file that failed to load is a stand-in raising on first use
    return config
  except Exception as error:  # pylint: disable=broad-except
    if _verbose(sys.argv):
      raise
    fail(flag_error(sys.argv, error))


def _flag_value(argv, name: str) -> Optional[str]:
  for arg in argv:
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
  return None


def load_config(spec: str):
  """The config of `FILE.py[:VARIANT]`, or ConfigError naming what is wrong with it."""
  path, _, variant = spec.partition(':')
  if not os.path.isfile(path):
    near = sorted(p for p in os.listdir(os.path.dirname(path) or '.') if p.endswith('.py'))
    raise config_check.ConfigError(
      f'--config: {path} is not a file; configs beside it: {", ".join(near) or "none"}'
    )
  module_spec = importlib.util.spec_from_file_location('_skillearn_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def unknown_field(config, name: str) -> Optional[str]:
  """Why `config` has no field `name` (dotted), with the close matches; None if it has."""
  fields = [field for field, _ in config_fields.leaves(config)]
  if name in fields:
    return None
  near = difflib.get_close_matches(name, fields, n=3, cutoff=0.6)
  if not near:  # a right leaf under a wrong block, or the reverse
    near = [f for f in fields if f.rsplit('.', 1)[-1] == name.rsplit('.', 1)[-1]][:3]
  hint = f'did you mean {" or ".join("config." + n for n in near)}? ' if near else ''
  return f'config.{name}: no such field; {hint}--describe lists every field'


def flag_error(argv: list[str], error: Exception) -> str:
  """The one line a failed flag parse ends with: the config file that does not load, the
  unknown field, else the first line of absl's message."""
  spec = _flag_value(argv, 'config')
  if spec:
    try:
      config = load_config(spec)
    except config_check.ConfigError as bad:
      return str(bad)
    except Exception as bad:  # pylint: disable=broad-except  # the config file's own error
      return f'--config: {spec} does not load: {type(bad).__name__}: {bad}'.splitlines()[0]
    for arg in argv:
      if arg.startswith('--config.'):
        why = unknown_field(config, arg[len('--config.') :].split('=', 1)[0])
        if why:
          return why
  lines = [line for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


def describe(config, title: str) -> str:
  """Every field of `config`: value, type, allowed values and meaning, one line each."""
  rows = []
  for name, value in config_fields.leaves(config):
    field = config_fields.lookup(name) or config_fields.Field('?', '(not described)')
    rows.append((name, repr(value), type(value).__name__, field.allowed, field.meaning))
  rows = [(n, v if len(v) <= 30 else v[:27] + '...', *rest) for n, v, *rest in rows]
  widths = [min(max(len(row[i]) for row in rows), 36) for i in range(4)]
  header = ('field', 'value', 'type', 'allowed', 'meaning')
  lines = [f'{title}: {len(rows)} fields; set any with --config.FIELD=VALUE', '']
  for row in [header, *rows]:
    lines.append(
      '  ' + '  '.join(f'{cell:<{width}}' for cell, width in zip(row, widths)) + f'  {row[4]}'
    )
  return '\n'.join(lines)


def run_main(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` where a user error, at parsing or in `main`, is one line and exit 2."""

  def guarded(argv):
    try:
      main(argv)
    except USER_ERRORS as error:
      if _verbose(sys.argv):
        raise
      fail(str(error) or type(error).__name__)

  app.run(guarded, flags_parser=parse_flags)
