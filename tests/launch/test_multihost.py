"""Multi-host launcher: cluster flags, environment, joining a real cluster."""

import json
import os
import socket
import subprocess
import sys

import pytest

from launch import multihost

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_cluster_flags_are_taken_and_the_rest_passed_to_main(monkeypatch):
  monkeypatch.setenv('JAX_NUM_PROCESSES', '8')
  monkeypatch.setenv('JAX_PROCESS_ID', '5')
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')
  cluster, rest = multihost.parse_cluster_flags(
    [
      'prog',
      '--config=configs/darts.py:quick',
      '--process_id=3',
      '--workdir=/runs/a',
      '--config.seed=2',
    ]
  )
  assert (cluster.coordinator_address, cluster.num_processes, cluster.process_id) == (
    'host0:1234',
    8,
    3,
  )  # the flag wins
  assert rest == ['prog', '--config=configs/darts.py:quick', '--workdir=/runs/a', '--config.seed=2']
  assert not cluster.initialize_only


def test_no_cluster_settings_leave_detection_to_jax(monkeypatch):
  for name in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'JAX_COORDINATOR_ADDRESS'):
    monkeypatch.delenv(name, raising=False)
  cluster, _ = multihost.parse_cluster_flags(['prog'])
  assert (cluster.coordinator_address, cluster.num_processes, cluster.process_id) == (
    None,
    None,
    None,
  )


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--num_processes=2'], 'give all of --coordinator_address'),
    (
      ['--coordinator_address=h:1', '--num_processes=2', '--process_id=2'],
      r'--process_id: 2 is not allowed; must be in \[0, 2\)',
    ),
    (
      ['--coordinator_address=h:1', '--num_processes=0', '--process_id=0'],
      '--num_processes: 0 is not allowed',
    ),
  ],
)
def test_incomplete_or_bad_cluster_settings_are_refused(monkeypatch, argv, message):
  for name in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'JAX_COORDINATOR_ADDRESS'):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(ValueError, match=message):
    multihost.parse_cluster_flags(['prog'] + argv)


def test_bad_environment_value_is_named(monkeypatch):
  monkeypatch.setenv('JAX_NUM_PROCESSES', 'two')
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES: 'two' is not"):
    multihost.parse_cluster_flags(['prog'])


def _launch(args, extra_env=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, **(extra_env or {}))
  for name in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'JAX_COORDINATOR_ADDRESS', 'XLA_FLAGS'):
    if name not in (extra_env or {}):
      env.pop(name, None)
  return subprocess.Popen(
    [sys.executable, '-m', 'launch.multihost', '--initialize_only'] + args,
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _seen(proc):
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def test_one_process_cluster_on_localhost():
  proc = _launch(
    [f'--coordinator_address=localhost:{_free_port()}', '--num_processes=1', '--process_id=0']
  )
  assert _seen(proc) == {
    'process_index': 0,
    'process_count': 1,
    'local_devices': 1,
    'global_devices': 1,
  }


def test_two_processes_join_one_cluster_from_flags_and_environment():
  address = f'localhost:{_free_port()}'
  first = _launch([f'--coordinator_address={address}', '--num_processes=2', '--process_id=0'])
  second = _launch(
    [], {'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1'}
  )
  seen = [_seen(first), _seen(second)]
  assert [s['process_index'] for s in seen] == [0, 1]
  assert all(s['process_count'] == 2 and s['global_devices'] == 2 for s in seen)
