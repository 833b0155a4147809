"""The command line: a user error is one line and exit status 2; --verbose adds the traceback."""

import os
import subprocess
import sys

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
