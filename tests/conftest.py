"""Test-session setup: the library's XLA flags and one persistent XLA
compilation cache per session.

Several tests build the same tiny programs (e.g. a search resumed from a
checkpoint); the cache lets the second build skip XLA. It lives in a fresh
temporary directory, so every session still compiles each program once.
Tests that run the runner pass `XLA_CACHE_DIR` as the config's cache dir so
they keep using it.
"""

import tempfile

from skillearn_jax.run import xla_flags

xla_flags.apply_defaults()  # before JAX starts its backend

from skillearn_jax.run import compilation_cache  # pylint: disable=g-import-not-at-top

XLA_CACHE_DIR = tempfile.mkdtemp(prefix='skillearn_test_xla_cache_')
compilation_cache.enable(XLA_CACHE_DIR, min_compile_time_secs=0.5)
