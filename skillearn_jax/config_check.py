"""Field checks every layer uses to refuse a bad config before anything compiles.

This leaf module owns `ConfigError` and the checks of one field (`one_of`, `positive`,
`in_unit_interval`; `finite_numbers` for a whole config), each naming the field, the value
and what is allowed. It imports nothing of the package, so the core, the search spaces, the skills and the runner all use it without
an import running against the layers. ml_collections already refuses unknown fields and wrong
types at the flag level (configs are locked); the experiment registry
(`skillearn_jax.skills.check`) runs the checks of the shared fields and of the experiment.
"""

from __future__ import annotations

import math


class ConfigError(ValueError):
  """A config value outside its allowed set."""


def value(config, field: str):
  """`config`'s value at the dotted path `field`."""
  out = config
  for part in field.split('.'):
    out = out[part]
  return out


def one_of(config, field: str, allowed) -> None:
  got = value(config, field)
  if got not in allowed:
    raise ConfigError(f'config.{field}: {got!r} is not allowed; allowed: {tuple(allowed)}')


def positive(config, field: str, allow_zero: bool = False, meaning: str = '') -> None:
  got = value(config, field)
  if got < 0 or (got == 0 and not allow_zero):
    bound = '>= 0' if allow_zero else '> 0'
    note = f' ({meaning})' if meaning else ''
    raise ConfigError(f'config.{field}: {got!r} is not allowed; must be {bound}{note}')


def in_unit_interval(config, field: str) -> None:
  """A momentum, an Adam beta or a probability: must lie in [0, 1)."""
  got = value(config, field)
  if not 0.0 <= got < 1.0:
    raise ConfigError(f'config.{field}: {got!r} is not allowed; must lie in [0, 1)')


def finite_numbers(config, prefix: str = 'config') -> None:
  """Refuses a NaN or infinite number anywhere in `config` (a learning rate of nan would
  compile and then stop on its first step)."""
  for key, got in config.items():
    field = f'{prefix}.{key}'
    if hasattr(got, 'items'):
      finite_numbers(got, field)
    elif isinstance(got, float) and not math.isfinite(got):
      raise ConfigError(f'{field}: {got!r} is not allowed; must be a finite number')
    elif isinstance(got, (tuple, list)) and any(
      isinstance(v, float) and not math.isfinite(v) for v in got
    ):
      raise ConfigError(f'{field}: {tuple(got)!r} is not allowed; every entry must be finite')
