"""Field checks every layer uses to refuse a bad config before anything compiles.

This leaf module owns `ConfigError` and the checks of one field (`one_of`, `positive`,
`in_unit_interval`), each naming the field, the value and what is allowed. It imports nothing
of the package, so the core, the search spaces, the skills and the runner all use it without
an import running against the layers. ml_collections already refuses unknown fields and wrong
types at the flag level (configs are locked); the experiment registry
(`skillearn_jax.skills.check`) runs the checks of the shared fields and of the experiment.
"""

from __future__ import annotations


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
