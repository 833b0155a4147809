"""Returning the compiler's freed heap to the OS.

This module owns `release`. XLA compiles on worker threads, and glibc keeps
what the compiler frees mapped in the process: after compiling a DARTS-2nd
step at batch 16 / 5 cells the process holds 2.3 GB, and 1.1 GB once
`release` has run. The runners call it after building the model (whose init
is a compile too) and after the first step, so a run's resident memory is
its model's rather than its compiler's; the search benchmark's batch-16
process peaks fall from 2,209 / 2,972 MB to 1,823 / 2,508 MB (first order /
finite difference). It does nothing where the C library is not glibc.
Capping glibc's arenas instead (`MALLOC_ARENA_MAX`) lowered the peaks too
but made the finite-difference step 1.1-1.8x slower (2 or 1 arenas), so it
is not done.
"""

from __future__ import annotations

import ctypes
import functools


@functools.lru_cache(maxsize=None)
def _glibc():
  """The process's C library when it is glibc (it has `malloc_trim`)."""
  try:
    libc = ctypes.CDLL(None)
  except (OSError, TypeError):  # no process-wide C library handle (Windows)
    return None
  return libc if hasattr(libc, 'malloc_trim') else None


def release() -> bool:
  """Returns free heap pages to the OS; True if glibc released any."""
  libc = _glibc()
  return bool(libc.malloc_trim(0)) if libc is not None else False
