"""Tests for skillearn_jax.run.host_memory: `release` really returns freed
heap pages to the OS on glibc, and does nothing elsewhere."""

import pytest

from skillearn_jax.run import host_memory


def _resident_mb() -> float:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(host_memory._glibc() is None, reason='needs glibc')
def test_release_returns_freed_heap_pages():
  # 1 KiB blocks come from malloc's heap (not mmap, not pymalloc); the block
  # allocated last pins the heap's top, so glibc cannot trim it by itself.
  blocks = [bytes(1024) + bytes([i % 256]) for i in range(200_000)]
  pin = bytes(1024) + b'pin'
  allocated = _resident_mb()
  del blocks
  held = _resident_mb()
  assert host_memory.release() is True
  after = _resident_mb()
  del pin
  # ~210 MB of blocks were freed; glibc keeps them until asked.
  assert held > allocated - 50, (allocated, held)
  assert held - after > 150, (allocated, held, after)


def test_release_is_a_no_op_without_glibc(monkeypatch):
  monkeypatch.setattr(host_memory, '_glibc', lambda: None)
  assert host_memory.release() is False
