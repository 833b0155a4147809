"""Tests for skillearn_jax.run.xla_flags: defaults are added once, never
override a flag the user set, and do not change results."""

import os
import subprocess
import sys

import numpy as np

from skillearn_jax.run import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_adds_defaults_to_empty_environment():
  env = {}
  flags = xla_flags.apply_defaults(env)
  assert env['XLA_FLAGS'] == flags
  for flag in xla_flags.CPU_DEFAULTS:
    assert flag in flags


def test_keeps_user_flags_and_user_choice_of_a_default():
  name = xla_flags.CPU_DEFAULTS[0].split('=', 1)[0]
  env = {'XLA_FLAGS': f'--xla_dump_to=/tmp/x {name}=xnn'}
  flags = xla_flags.apply_defaults(env)
  assert flags.startswith('--xla_dump_to=/tmp/x')
  assert flags.count(name) == 1 and f'{name}=xnn' in flags


def test_is_idempotent():
  env = {}
  once = xla_flags.apply_defaults(env)
  assert xla_flags.apply_defaults(env) == once


GRADIENT_SCRIPT = r'''
import sys
import numpy as np
from skillearn_jax.run import xla_flags
xla_flags.apply_defaults()
import jax
import jax.numpy as jnp
import optax
from configs import darts as darts_config
from skillearn_jax.skills import nas_search
from skillearn_jax.skills import darts

c = darts_config.get_config('quick')
c.net.layers, c.net.nodes, c.net.multiplier, c.net.channels = 2, 2, 2, 4
net = nas_search.make_supernet(c, 5)
weights, alphas, stats = nas_search.init_supernet(net, jax.random.PRNGKey(0), (8, 8, 1))
images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
labels = jnp.arange(4) % 5


def loss(weights, alphas):
  logits, _ = net.apply({'params': weights, 'batch_stats': stats}, images,
                        alphas, train=True, mutable=['batch_stats'])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(weights, alphas)
np.savez(sys.argv[1], *[np.asarray(g) for g in jax.tree_util.tree_leaves(grads)])
'''


def _supernet_gradients(path, xla_flags_value):
  env = dict(os.environ, XLA_FLAGS=xla_flags_value)
  proc = subprocess.run(
    [sys.executable, '-c', GRADIENT_SCRIPT, str(path)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  with np.load(path) as arrays:
    return [arrays[k] for k in sorted(arrays.files, key=lambda k: int(k[4:]))]


def test_the_defaults_leave_the_supernets_gradients_unchanged(tmp_path):
  # XLA's own code generation: the preset at XLA's default and the backend
  # options holding only a key XLA ignores (an empty value is handed to
  # LLVM's flag parser, which refuses it), so apply_defaults (a flag the
  # user set wins) adds neither; the YNNPACK setting is ours in both runs.
  xla_own = (
    '--xla_cpu_experimental_ynn_fusion_type= '
    '--xla_cpu_opt_preset=CPU_OPT_PRESET_DEFAULT '
    '--xla_backend_extra_options=xla_cpu_no_option'
  )
  ours = _supernet_gradients(tmp_path / 'ours.npz', '')
  plain = _supernet_gradients(tmp_path / 'plain.npz', xla_own)
  assert len(ours) == len(plain) > 10
  for mine, theirs in zip(ours, plain):
    scale = np.abs(theirs).max() + 1e-12
    assert np.abs(mine - theirs).max() / scale < 1e-4


def test_a_run_off_the_cpu_gets_no_cpu_flags():
  env = {'XLA_FLAGS': '--xla_dump_to=/tmp/x'}
  assert xla_flags.apply_defaults(env, platform='cuda') == '--xla_dump_to=/tmp/x'
  assert env['XLA_FLAGS'] == '--xla_dump_to=/tmp/x'
  assert xla_flags.apply_defaults({'JAX_PLATFORMS': 'cuda'}) == ''


def test_the_platform_is_read_before_jax_starts(monkeypatch):
  expected = xla_flags.expected_platform
  assert expected({'JAX_PLATFORMS': 'cpu'}) == 'cpu'
  assert expected({'JAX_PLATFORMS': 'cuda,cpu'}) == 'cuda'
  assert expected({'JAX_PLATFORMS': 'gpu'}) == 'cuda'
  assert expected({}) == 'cpu'  # this machine: no accelerator plugin, no device
  monkeypatch.setattr(xla_flags, '_jax_plugins', lambda: ['xla_cuda13'])
  monkeypatch.setattr(xla_flags.glob, 'glob', lambda pattern: [])
  assert expected({}) == 'cpu'  # a CUDA plugin without a GPU
  monkeypatch.setattr(
    xla_flags.glob, 'glob', lambda pattern: ['/dev/nvidia0'] * ('nvidia' in pattern)
  )
  assert expected({}) == 'cuda'
  assert expected({'JAX_PLATFORMS': 'cpu'}) == 'cpu'  # the user's choice wins
  env = {}
  assert xla_flags.apply_defaults(env) == '' and 'XLA_FLAGS' not in env
