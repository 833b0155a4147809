"""Tests for skillearn_jax.run.xla_flags: defaults are added once and never
override a flag the user set."""

from skillearn_jax.run import xla_flags


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
