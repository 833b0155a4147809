"""The command line: a user error is one line and exit status 2 (--verbose adds the traceback);
--describe lists a config's fields."""

import json
import os
import subprocess
import sys

import pytest

from configs import darts
from skillearn_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  return subprocess.run(
    [sys.executable, '-m', 'skillearn_jax.main', *args],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
    check=False,
  )


def test_a_bad_value_is_one_line_exit_2_and_no_workdir(tmp_path):
  workdir = tmp_path / 'run'
  args = ['--config=configs/darts.py:quick', f'--workdir={workdir}', '--config.seed=-1']
  result = _main(*args)
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines == ['error: config.seed: -1 is not allowed; must be >= 0']
  assert not workdir.exists()
  verbose = _main(*args, '--verbose')
  assert verbose.returncode != 0 and 'Traceback' in verbose.stderr
  assert 'ConfigError: config.seed: -1' in verbose.stderr


@pytest.mark.parametrize(
  'args,message',
  [
    (['--config=configs/darts.py:quick', '--config.foo=1'], 'error: config.foo: no such field'),
    (['--config=configs/nope.py'], 'error: --config: configs/nope.py is not a file'),
    (['--config=configs/darts.py:quick', '--workdir='], 'error: --workdir: required'),
    (['--config=configs/darts.py:quick', 'extra'], "error: unexpected arguments: ['extra']"),
  ],
)
def test_the_command_prints_one_line_and_exits_2(args, message, tmp_path):
  workdir = [] if '--workdir=' in args else [f'--workdir={tmp_path / "run"}']
  result = _main(*args, *workdir)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), result.stderr
  assert not (tmp_path / 'run').exists()


def test_describe_lists_every_field_with_value_type_allowed_and_meaning():
  result = _main('--config=configs/darts.py:quick', '--describe')
  assert result.returncode == 0, result.stderr
  config = darts.get_config('quick')
  fields = sum(1 for _ in cli.config_fields.leaves(config))
  assert f'configs/darts.py:quick: {fields} fields' in result.stdout
  row = next(l for l in result.stdout.splitlines() if l.split()[:1] == ['weights_optim.lr'])
  assert row.split()[1:5] == ['0.025', 'float', '>', '0'] and 'learning rate' in row
  assert '(not described)' not in result.stdout
  assert json.loads(json.dumps(config.to_dict()))  # nothing was run


def test_help_points_to_describe_and_the_configs_table():
  result = _main('--help')  # absl's --help exits with status 1
  text = ' '.join(result.stdout.split())
  assert '--describe lists every field of a config' in text
  assert "the README's configs table lists the configs" in text
