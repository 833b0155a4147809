"""The registry of experiments: a config names its experiment once, in `config.experiment`.

This module owns `EXPERIMENTS` (name -> the module that builds it; imported lazily, so a ridge
run never imports the NAS stack), `check(config)`, which refuses a bad config before anything
compiles (the shared fields, then the experiment's own `check_config`), and `build(config)`.
Each experiment module has `check_config(config)` and `build(config)` (and may have
`stages(config)`, for a run chained from several, as `skills.progressive`), which returns a
`base.SkillSetup` (a Skillearn program: the runner steps it with the engine) or a
`base.Experiment` (its own step, e.g. evaluation of a searched cell). Adding an experiment is
one module and one line here.
"""

from __future__ import annotations

import importlib

from skillearn_jax import config_check
from skillearn_jax import config_fields
from skillearn_jax import core

EXPERIMENTS = {
  'hpo_ridge': 'skillearn_jax.skills.hpo_ridge',
  'darts': 'skillearn_jax.skills.darts',
  'lpt': 'skillearn_jax.skills.lpt',
  'il': 'skillearn_jax.skills.il',
  'mtl': 'skillearn_jax.skills.mtl',
  'eval_cell': 'skillearn_jax.skills.eval_cell',
  'l2t': 'skillearn_jax.skills.l2t_run',
}
RNG_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')


def lookup(name: str):
  """The module of experiment `name`; a ConfigError lists the registered ones."""
  if name not in EXPERIMENTS:
    raise config_check.ConfigError(
      f'config.experiment: {name!r} is not allowed; allowed: {tuple(EXPERIMENTS)}'
    )
  return importlib.import_module(EXPERIMENTS[name])


def check(config) -> None:
  """Refuses a bad value of the shared fields or of the experiment's own, naming the field."""
  module = lookup(config.experiment)
  config_check.finite_numbers(config)
  config_check.one_of(config, 'rng_impl', RNG_IMPLS)
  config_check.positive(config, 'seed', allow_zero=True)
  for field in ('num_epochs', 'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    config_check.positive(config, field)
  if 'hypergradient' in config:
    try:
      core.hypergradients.lookup(config.hypergradient)
    except ValueError as error:
      raise config_check.ConfigError(f'config.{error}') from None
    config_check.one_of(config, 'order', core.ORDERS)
    config_check.one_of(config, 'exact_mode', core.EXACT_MODES)
    config_check.positive(config, 'fd_epsilon')
    config_check.positive(config, 'neumann_steps', allow_zero=True)
    config_check.positive(config, 'cg_steps')
  module.check_config(config)
  config_fields.check_ranges(config)  # what the checks above leave: every numeric field


def stages(config):
  """The `base.Stages` of a run made of stages (the experiment module's `stages(config)`, e.g.
  P-DARTS' progressive search), or None for a single run."""
  module = lookup(config.experiment)
  return module.stages(config) if hasattr(module, 'stages') else None


def build(config):
  """`config`'s experiment: a `base.SkillSetup` or a `base.Experiment`."""
  return lookup(config.experiment).build(config)
