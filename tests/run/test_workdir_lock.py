"""One process per workdir, with real processes: refused while held, taken over when killed."""

import os
import signal
import subprocess
import sys

import pytest

from skillearn_jax.run import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLDER = """
import sys, time
from skillearn_jax.run import workdir_lock
with workdir_lock.hold(sys.argv[1]):
  print('held', flush=True)
  time.sleep(60)
"""


def _holder(workdir):
  proc = subprocess.Popen(
    [sys.executable, '-c', HOLDER, workdir],
    stdout=subprocess.PIPE,
    text=True,
    cwd=ROOT,
    env={**os.environ, 'PYTHONPATH': ROOT},
  )
  assert proc.stdout.readline().strip() == 'held'
  return proc


def test_a_second_process_is_refused_naming_the_holder_and_takes_over_once_it_is_killed(
  tmp_path, capsys
):
  workdir = str(tmp_path / 'run')
  holder = _holder(workdir)
  try:
    with pytest.raises(workdir_lock.WorkdirBusyError, match=rf'in use by pid {holder.pid} on '):
      with workdir_lock.hold(workdir):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with workdir_lock.hold(workdir) as me:
    assert me['pid'] == os.getpid()
  assert f'pid {holder.pid}' in capsys.readouterr().out  # whose lock it took over
  with workdir_lock.hold(workdir):  # released cleanly last time: nothing to say
    pass
  assert 'taking over' not in capsys.readouterr().out


def test_a_failed_run_leaves_no_workdir_it_created(tmp_path):
  workdir = tmp_path / 'new'
  with pytest.raises(ValueError):
    with workdir_lock.hold(str(workdir)):
      raise ValueError('bad data')
  assert not workdir.exists()
  kept = tmp_path / 'kept'
  kept.mkdir()
  with pytest.raises(ValueError):
    with workdir_lock.hold(str(kept)):
      raise ValueError('bad data')
  assert kept.exists()


def test_the_runner_refuses_a_workdir_another_process_holds(tmp_path):
  from configs import hpo_ridge  # pylint: disable=import-outside-toplevel
  from skillearn_jax.run import runner  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / 'ridge')
  holder = _holder(workdir)
  try:
    with pytest.raises(workdir_lock.WorkdirBusyError, match='wait for that run to end'):
      runner.run(hpo_ridge.get_config('quick'), workdir)
    assert sorted(os.listdir(workdir)) == [workdir_lock.LOCK_FILE]  # nothing written
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
