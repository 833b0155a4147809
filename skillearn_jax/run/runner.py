"""`run(config, workdir)`: the one entry point behind every command.

Dispatches on `config.mode` to the experiment that owns it: `search` runs a
Skillearn program (DARTS, LPT, IL, ridge ...) and `evaluate` trains a
searched cell from scratch.
"""

from __future__ import annotations

import importlib

from skillearn_jax.run import config_check

EXPERIMENTS = {
  'search': 'skillearn_jax.run.search',
  'evaluate': 'skillearn_jax.run.evaluate',
}


def run(config, workdir: str):
  config_check.check(config)
  if config.mode not in EXPERIMENTS:
    raise config_check.ConfigError(
      f'config.mode: {config.mode!r} is not implemented; available: {tuple(EXPERIMENTS)}'
    )
  module = importlib.import_module(EXPERIMENTS[config.mode])
  return module.train_and_evaluate(config, workdir)
