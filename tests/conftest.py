"""Test-session setup: the library's XLA flags and one persistent XLA
compilation cache per session.

Several tests build the same tiny programs (e.g. a search resumed from a
checkpoint); the cache lets the second build skip XLA. It lives in a fresh
temporary directory, so every session still compiles each program once.
Tests that run the runner pass `XLA_CACHE_DIR` as the config's cache dir so
they keep using it. The `releaser_events` fixture records when a runner
starts and stops its compiler-memory releases.
"""

import tempfile

import pytest

from skillearn_jax.run import xla_flags

xla_flags.apply_defaults()  # before JAX starts its backend

from skillearn_jax.run import compilation_cache  # noqa: E402  (after the XLA flags)

XLA_CACHE_DIR = tempfile.mkdtemp(prefix='skillearn_test_xla_cache_')
compilation_cache.enable(XLA_CACHE_DIR, min_compile_time_secs=0.5)


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
