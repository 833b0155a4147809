"""JAX's persistent compilation cache, switched on for a run's directory.

This module owns one setting: where compiled XLA programs are kept between
processes, so a restarted or repeated run (same program, same shapes) loads
its step from disk instead of compiling it again. Programs that compile
faster than `min_compile_time_secs` are not worth a disk entry.
Call `enable` before the first compilation it should cover.
"""

from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from skillearn_jax import config_check


def enable(cache_dir: str, *, min_compile_time_secs: float = 1.0) -> str | None:
  """Caches compiled programs in `cache_dir` ('' turns caching off).

  Returns the absolute cache directory, or None when caching is off.
  """
  if min_compile_time_secs < 0:
    raise ValueError(
      f'compilation cache min_compile_time_secs: '
      f'{min_compile_time_secs!r} is not allowed; must be >= 0'
    )
  if not cache_dir:
    jax.config.update('jax_enable_compilation_cache', False)
    compilation_cache.reset_cache()
    return None
  path = os.path.abspath(os.path.expanduser(cache_dir))
  try:
    os.makedirs(path, exist_ok=True)
    usable = os.access(path, os.W_OK | os.X_OK)
    why = 'it is not writable'
  except OSError as error:
    usable, why = False, error.strerror or type(error).__name__
  if not usable:
    raise config_check.ConfigError(
      f"config.compilation_cache_dir: {cache_dir!r} cannot be used ({why}); give a writable "
      "directory, or '' to compile without a cache"
    )
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float(min_compile_time_secs))
  # Entry size is no measure of compile cost: keep small programs too.
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  # JAX opens the cache once, at the first compile; make it reopen here.
  compilation_cache.reset_cache()
  return path
