"""Refuses a bad config before anything compiles.

ml_collections already refuses unknown fields and wrong types at the flag
level (configs are locked); this module checks values against their allowed
sets and ranges, naming the field and what is allowed. Skills add their own
checks through an optional `check_config(config)` in their module.
"""

from __future__ import annotations

import importlib

from skillearn_jax import core
from skillearn_jax import skills

MODES = ('search', 'evaluate')


class ConfigError(ValueError):
  """A config value outside its allowed set."""


def _value(config, field: str):
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def one_of(config, field: str, allowed) -> None:
  value = _value(config, field)
  if value not in allowed:
    raise ConfigError(f'config.{field}: {value!r} is not allowed; allowed: {tuple(allowed)}')


def positive(config, field: str, allow_zero: bool = False, meaning: str = '') -> None:
  value = _value(config, field)
  if value < 0 or (value == 0 and not allow_zero):
    bound = '>= 0' if allow_zero else '> 0'
    note = f' ({meaning})' if meaning else ''
    raise ConfigError(f'config.{field}: {value!r} is not allowed; must be {bound}{note}')


def in_unit_interval(config, field: str) -> None:
  """A momentum, an Adam beta or a probability: must lie in [0, 1)."""
  value = _value(config, field)
  if not 0.0 <= value < 1.0:
    raise ConfigError(f'config.{field}: {value!r} is not allowed; must lie in [0, 1)')


def check(config) -> None:
  one_of(config, 'skill', skills.SKILLS)
  one_of(config, 'mode', MODES)
  one_of(config, 'hypergradient', core.METHODS)
  one_of(config, 'order', core.ORDERS)
  one_of(config, 'exact_mode', core.EXACT_MODES)
  positive(config, 'seed', allow_zero=True)
  positive(config, 'fd_epsilon')
  positive(config, 'neumann_steps', allow_zero=True)
  positive(config, 'cg_steps')
  positive(config, 'num_epochs')
  positive(config, 'log_every_steps')
  positive(config, 'checkpoint_every_steps')
  positive(config, 'keep_checkpoints')
  module = importlib.import_module(skills.SKILLS[config.skill])
  # A skill runs in one mode: 'search' unless its module says MODE.
  mode = getattr(module, 'MODE', 'search')
  if config.mode != mode:
    raise ConfigError(
      f'config.mode: {config.mode!r} is not allowed with '
      f'skill {config.skill!r}; allowed: ({mode!r},)'
    )
  if hasattr(module, 'check_config'):
    module.check_config(config)
