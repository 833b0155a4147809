"""Tests for skillearn_jax.run.host_memory: `release` really returns freed
heap pages to the OS on glibc, and does nothing elsewhere; `Releaser`
releases on its own thread until stopped, and once more when stopped;
`allocator` names glibc, a preloaded jemalloc, or neither."""

import glob
import os
import subprocess
import sys
import threading
import time

import jax
import pytest

from skillearn_jax.run import host_memory


def _resident_mb() -> float:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * 4096 / 2**20


def _freed_but_held_heap():
  """Frees ~210 MB of 1 KiB blocks that glibc keeps; returns (allocated MB,
  held MB, pin). 1 KiB blocks come from malloc's heap (not mmap, not
  pymalloc); the block allocated last (the pin) holds the heap's top, so
  glibc cannot trim it by itself."""
  blocks = [bytes(1024) + bytes([i % 256]) for i in range(200_000)]
  pin = bytes(1024) + b'pin'
  allocated = _resident_mb()
  del blocks
  return allocated, _resident_mb(), pin


@pytest.mark.skipif(host_memory._glibc() is None, reason='needs glibc')
def test_release_returns_freed_heap_pages():
  allocated, held, pin = _freed_but_held_heap()
  assert host_memory.release() is True
  after = _resident_mb()
  del pin
  assert held > allocated - 50, (allocated, held)
  assert held - after > 150, (allocated, held, after)


@pytest.mark.skipif(host_memory._glibc() is None, reason='needs glibc')
def test_releaser_returns_freed_heap_pages_while_the_body_runs():
  # Freed before the releaser starts, so the held pages are measured first.
  allocated, held, pin = _freed_but_held_heap()
  with host_memory.Releaser(interval_s=0.05):
    deadline = time.monotonic() + 5
    while held - _resident_mb() < 150 and time.monotonic() < deadline:
      time.sleep(0.05)  # the body never calls release itself
    after = _resident_mb()
  del pin
  assert held > allocated - 50, (allocated, held)
  assert held - after > 150, (allocated, held, after)


def _count_releases(monkeypatch) -> list:
  calls = []
  monkeypatch.setattr(host_memory, '_glibc', lambda: object())
  monkeypatch.setattr(host_memory, 'release', lambda: calls.append(1) or True)
  return calls


def _releaser_threads() -> list:
  return [t for t in threading.enumerate() if t.name == 'skillearn-heap-release']


def test_releaser_releases_periodically_then_once_when_stopped(monkeypatch):
  calls = _count_releases(monkeypatch)
  releaser = host_memory.Releaser(interval_s=0.02)
  deadline = time.monotonic() + 5
  while len(calls) < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
  assert len(calls) >= 3
  releaser.stop()
  after_stop = len(calls)
  assert not _releaser_threads()
  time.sleep(0.1)
  releaser.stop()  # a second stop does nothing
  assert len(calls) == after_stop


def test_releaser_as_context_manager_releases_once_on_exit(monkeypatch):
  calls = _count_releases(monkeypatch)
  with host_memory.Releaser(interval_s=60) as releaser:
    assert len(_releaser_threads()) == 1
    assert not calls  # the first periodic release is 60 s away
  assert calls == [1] and not _releaser_threads()
  releaser.stop()
  assert calls == [1]


def test_releaser_stops_when_the_body_raises(monkeypatch):
  calls = _count_releases(monkeypatch)
  with pytest.raises(RuntimeError, match='compile failed'):
    with host_memory.Releaser(interval_s=60):
      raise RuntimeError('compile failed')
  assert calls == [1] and not _releaser_threads()


def test_releaser_starts_no_thread_without_glibc(monkeypatch):
  monkeypatch.setattr(host_memory, '_glibc', lambda: None)
  with host_memory.Releaser(interval_s=0.01):
    assert not _releaser_threads()


def test_releaser_rejects_a_non_positive_interval():
  with pytest.raises(ValueError, match='interval_s.*must be > 0'):
    host_memory.Releaser(interval_s=0)


def test_release_is_a_no_op_without_glibc(monkeypatch):
  monkeypatch.setattr(host_memory, '_glibc', lambda: None)
  assert host_memory.release() is False


class _Symbols:
  def __init__(self, *names):
    for name in names:
      setattr(self, name, object())


@pytest.mark.parametrize(
  'names,expected',
  [
    (('malloc_trim',), 'glibc'),
    (('malloc_trim', 'mallctl'), 'jemalloc'),  # jemalloc preloaded on glibc
    ((), 'other'),
  ],
)
def test_allocator_names_the_malloc_in_use(monkeypatch, names, expected):
  symbols = _Symbols(*names)
  monkeypatch.setattr(host_memory, '_process_symbols', lambda: symbols)
  monkeypatch.setattr(
    host_memory, '_glibc', lambda: symbols if hasattr(symbols, 'malloc_trim') else None
  )
  assert host_memory.allocator() == expected


# Debian/Ubuntu's libjemalloc2 and Fedora's jemalloc
_JEMALLOC = glob.glob('/usr/lib/*-linux-gnu/libjemalloc.so.2') + glob.glob(
  '/usr/lib64/libjemalloc.so.2'
)


@pytest.mark.skipif(not _JEMALLOC, reason='jemalloc is not installed')
def test_allocator_sees_a_preloaded_jemalloc():
  code = 'from skillearn_jax.run import host_memory; print(host_memory.allocator())'
  # the child imports the package from this checkout, whatever the cwd
  root = os.path.dirname(os.path.dirname(os.path.dirname(host_memory.__file__)))
  run = lambda env: subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, 'PYTHONPATH': root, **env},
  ).stdout.strip()
  assert run({'LD_PRELOAD': _JEMALLOC[0]}) == 'jemalloc'
  assert run({'LD_PRELOAD': ''}) == host_memory.allocator() == 'glibc'


def test_releaser_does_nothing_off_the_cpu(monkeypatch):
  calls = _count_releases(monkeypatch)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  with host_memory.Releaser(interval_s=0.01):
    time.sleep(0.05)
    assert not _releaser_threads()
  assert not calls
