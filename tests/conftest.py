"""Test-session setup: the library's XLA flags and one persistent XLA
compilation cache per session.

Several tests build the same tiny programs (e.g. a search resumed from a
checkpoint); the cache lets the second build skip XLA. It lives in a fresh
temporary directory, so every session still compiles each program once.
Tests that run the runner pass `XLA_CACHE_DIR` as the config's cache dir so
they keep using it. The `releaser_events` fixture records when a runner
starts and stops its compiler-memory releases. `on_host_devices` runs a
program in a fresh process whose CPU shows as several devices.
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

from skillearn_jax.run import xla_flags

xla_flags.apply_defaults()  # before JAX starts its backend

from skillearn_jax.run import compilation_cache  # noqa: E402  (after the XLA flags)

XLA_CACHE_DIR = tempfile.mkdtemp(prefix='skillearn_test_xla_cache_')
compilation_cache.enable(XLA_CACHE_DIR, min_compile_time_secs=0.5)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def on_host_devices(program: str, devices: int = 2, timeout: float = 300) -> dict:
  """The JSON after the last 'RESULT ' line `program` prints, run from the repository in a
  fresh process (the device count is fixed when JAX starts) with the CPU as `devices`
  host devices."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  proc = subprocess.run(
    [sys.executable, '-c', program],
    env=env,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT ') :])


def with_overrides(config, **overrides):
  """`config` with dotted fields set: with_overrides(c, **{'data.batch_size': 8})."""
  for field, value in overrides.items():
    *path, last = field.split('.')
    target = config
    for part in path:
      target = target[part]
    target[last] = value
  return config


@pytest.fixture
def releaser_events(monkeypatch) -> list:
  """Replaces `host_memory.Releaser` with a recorder; returns its events,
  'start' per construction and 'stop' per stop (or context exit)."""
  from skillearn_jax.run import host_memory  # pylint: disable=g-import-not-at-top

  events = []

  class RecordingReleaser:
    def __init__(self, interval_s: float = 1.0):
      del interval_s
      events.append('start')

    def stop(self):
      events.append('stop')

    def __enter__(self):
      return self

    def __exit__(self, *exc_info):
      self.stop()

  monkeypatch.setattr(host_memory, 'Releaser', RecordingReleaser)
  return events
