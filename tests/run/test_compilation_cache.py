"""Persistent compilation cache: written by one process, hit by the next."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from skillearn_jax.run import compilation_cache

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp
    from skillearn_jax.run import compilation_cache

    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(1)
        if event == '/jax/compilation_cache/cache_hits' else None)
    jnp.ones(3) + 1   # a compile before enable(): the cache must still open
    path = compilation_cache.enable(sys.argv[1], min_compile_time_secs=0)
    if sys.argv[2] == 'off':
      path = compilation_cache.enable('')

    @jax.jit
    def step(w, x):
      for _ in range(3):
        w = w - 0.1 * jax.grad(lambda w: jnp.mean(jnp.tanh(x @ w) ** 2))(w)
      return w

    step(jnp.ones((4, 2)), jnp.ones((8, 4))).block_until_ready()
    print('RESULT ' + json.dumps({'path': path, 'hits': len(hits)}))
''')


def _run(home, cache_dir, mode='on'):
  env = dict(os.environ, HOME=str(home), JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run(
    [sys.executable, '-c', SCRIPT, cache_dir, mode],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT ') :])


def _entries(directory):
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_second_process_loads_the_compiled_step_from_the_cache(tmp_path):
  cache = tmp_path / '.cache' / 'xla'
  first = _run(tmp_path, '~/.cache/xla')
  assert first == {'path': str(cache), 'hits': 0}
  written = _entries(cache)
  assert written, 'no cache entry was written'
  second = _run(tmp_path, '~/.cache/xla')
  assert second['hits'] >= 1
  assert _entries(cache) == written  # nothing new had to be compiled


def test_empty_directory_turns_the_cache_off(tmp_path):
  result = _run(tmp_path, str(tmp_path / 'xla'), mode='off')
  assert result == {'path': None, 'hits': 0}
  assert _entries(tmp_path / 'xla') == []


def test_negative_threshold_is_refused():
  with pytest.raises(ValueError, match='min_compile_time_secs: -1 is not'):
    compilation_cache.enable('/tmp/unused', min_compile_time_secs=-1)
