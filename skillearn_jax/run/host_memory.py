"""Returning the compiler's freed heap to the OS.

This module owns `release` and `Releaser`. XLA compiles on worker threads,
and glibc keeps what the compiler frees mapped in the process: after
compiling a DARTS-2nd step at batch 16 / 5 cells the process holds 2.3 GB,
and 1.1 GB once `release` has run. The runners wrap the model's init (a
compile too) and their first step in a `Releaser`, which releases every
second while the compiler runs and once at the end, so a run's resident
memory is its model's rather than its compiler's. Releasing during the
compile, not only after it, matters when the persistent compilation cache
is on: JAX serializes the executable for the cache right after compiling,
inside the same call, and the serialization's own allocations (~0.5 GB for
that step) then land on a heap already trimmed: that run's peak at batch
16 fell from 2.85-2.97 GB to 2.35-2.37 GB. Both do
nothing where the C library is not glibc. `allocator` says which allocator
serves the process (jemalloc when preloaded).

Only a CPU run releases (`Releaser` asks `jax.default_backend()`): on a GPU
the step's memory is the device's, and the host has room for its compiler.

Capping glibc's arenas instead (`MALLOC_ARENA_MAX`) lowered the peaks too
but made the finite-difference step 1.1-1.8x slower (2 or 1 arenas), so it
is not done.
"""

from __future__ import annotations

import ctypes
import functools
import threading


@functools.lru_cache(maxsize=None)
def _process_symbols():
  """The process's global symbols (its C library and anything preloaded)."""
  try:
    return ctypes.CDLL(None)
  except (OSError, TypeError):  # no process-wide C library handle (Windows)
    return None


@functools.lru_cache(maxsize=None)
def _glibc():
  """The process's C library when it is glibc (it has `malloc_trim`)."""
  libc = _process_symbols()
  return libc if libc is not None and hasattr(libc, 'malloc_trim') else None


def allocator() -> str:
  """Which allocator serves this process's malloc: 'jemalloc' (preloaded with
  LD_PRELOAD, which docs/performance.md measures), 'glibc' or
  'other'. The runner and the benchmarks report it."""
  symbols = _process_symbols()
  if symbols is not None and hasattr(symbols, 'mallctl'):
    return 'jemalloc'
  return 'glibc' if _glibc() is not None else 'other'


def _on_cpu() -> bool:
  """Whether JAX runs on the CPU (imported late: this module is imported before JAX starts)."""
  import jax  # pylint: disable=import-outside-toplevel

  return jax.default_backend() == 'cpu'


def release() -> bool:
  """Returns free heap pages to the OS; True if glibc released any."""
  libc = _glibc()
  return bool(libc.malloc_trim(0)) if libc is not None else False


class Releaser:
  """Calls `release` every `interval_s` seconds on a daemon thread from
  construction until `stop`, then once more.

  A context manager too. Each release costs tens of milliseconds on a
  gigabyte heap and makes the next allocations fault their pages back in, so
  wrap a compile (a jitted function's first call), never the steady state.
  """

  def __init__(self, interval_s: float = 1.0):
    if interval_s <= 0:
      raise ValueError(f'Releaser interval_s: {interval_s!r} is not allowed; must be > 0 seconds')
    self._stopped = threading.Event()
    self._thread = None
    self._active = _glibc() is not None and _on_cpu()
    if self._active:
      self._thread = threading.Thread(
        target=self._release_until_stopped,
        args=(interval_s,),
        name='skillearn-heap-release',
        daemon=True,
      )
      self._thread.start()

  def _release_until_stopped(self, interval_s: float) -> None:
    while not self._stopped.wait(interval_s):
      release()

  def stop(self) -> None:
    """Ends the periodic releases and releases once; later calls do nothing."""
    if self._stopped.is_set():
      return
    self._stopped.set()
    if self._thread is not None:
      self._thread.join()
    if self._active:
      release()

  def __enter__(self) -> 'Releaser':
    return self

  def __exit__(self, *exc_info) -> None:
    self.stop()
