"""launch/sweep.sh: one workdir and seed per run, failures reported."""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWEEP = os.path.join(REPO, 'launch', 'sweep.sh')

# Stands in for python: logs its arguments; the seed-1 run fails.
FAKE_PYTHON = '''#!/usr/bin/env bash
echo "args: $*"
[[ " $* " != *" --config.seed=1 "* ]]
'''


def _sweep(tmp_path, *args, **env):
  fake = tmp_path / 'fake_python'
  fake.write_text(FAKE_PYTHON)
  fake.chmod(0o755)
  return subprocess.run(
    ['bash', SWEEP, *args],
    capture_output=True,
    text=True,
    timeout=60,
    env=dict(os.environ, PYTHON=str(fake), **env),
  )


@pytest.mark.parametrize('parallel', ['1', '2'])
def test_each_seed_runs_in_its_own_workdir_and_failures_are_listed(tmp_path, parallel):
  root = tmp_path / 'runs'
  proc = _sweep(
    tmp_path,
    'configs/darts.py:quick',
    str(root),
    '0',
    '1',
    '2',
    '--',
    '--config.num_epochs=3',
    SWEEP_PARALLEL=parallel,
  )
  assert proc.returncode == 1
  assert 'failed seeds: 1 ' in proc.stderr
  for seed in (0, 1, 2):
    log = (root / f'seed_{seed}' / 'log.txt').read_text()
    assert log == (
      f'args: -m skillearn_jax.main '
      f'--config=configs/darts.py:quick '
      f'--workdir={root}/seed_{seed} --config.seed={seed} '
      f'--config.num_epochs=3\n'
    )


def test_all_seeds_succeeding_exits_zero_and_dry_run_only_prints(tmp_path):
  assert _sweep(tmp_path, 'c.py', str(tmp_path / 'ok'), '0', '2').returncode == 0
  dry = _sweep(tmp_path, 'c.py', str(tmp_path / 'dry'), '4', SWEEP_DRY_RUN='1')
  assert dry.returncode == 0
  assert '--workdir=' + str(tmp_path / 'dry') + '/seed_4 --config.seed=4' in (dry.stdout)
  assert not (tmp_path / 'dry').exists()


@pytest.mark.parametrize(
  'args, env, message',
  [
    (['c.py', 'r', 'x'], {}, "seed 'x' is not a non-negative integer"),
    (['c.py', 'r', '0'], {'SWEEP_PARALLEL': '0'}, "SWEEP_PARALLEL='0'"),
    (['c.py'], {}, 'launch/sweep.sh CONFIG ROOT SEED'),
  ],
)
def test_bad_arguments_are_refused(tmp_path, args, env, message):
  proc = _sweep(tmp_path, *args, **env)
  assert proc.returncode == 2 and message in proc.stderr
