"""`run(config, workdir)`: the one entry point behind every command.

This module owns the step from a config to a run: it checks the config (the experiment
registry, `skills.check`), turns the compilation cache on, builds the experiment the config
names (`skills.build`), steps a Skillearn program with the engine (`program_experiment`), and
hands the result to the one training loop (`loop.train_and_evaluate`).
"""

from __future__ import annotations

import contextlib

import jax

from skillearn_jax import core
from skillearn_jax import skills
from skillearn_jax.run import compilation_cache
from skillearn_jax.run import loop
from skillearn_jax.run import options
from skillearn_jax.run import stages
from skillearn_jax.run import workdir_lock
from skillearn_jax.skills import base


def program_experiment(setup: base.SkillSetup, config) -> base.Experiment:
  """A Skillearn program as the training loop runs it: the engine's step with the config's
  hypergradient, the skill's hooks, and held-out metrics under 'eval/'."""

  def init(key):
    params, model_state = setup.init(key)
    return core.init_state(setup.program, params, model_state)

  evaluate = setup.evaluate and (
    lambda state: {f'eval/{k}': v for k, v in setup.evaluate(state).items()}
  )
  return base.Experiment(
    init=init,
    step=core.make_step(
      setup.program,
      method=config.hypergradient,
      order=config.order,
      options=options.hypergradient_options(config),
      jit=False,
    ),
    batches_at=setup.batches_at,
    steps_per_epoch=setup.steps_per_epoch,
    batch_size=config.data.batch_size if 'data' in config else None,
    step_metrics=setup.learning_rates,
    evaluate=evaluate,
    describe=setup.describe,
    write_artifacts=setup.write_artifacts,
    should_stop=setup.should_stop,
    summary=lambda state, _: {'describe': setup.describe(state) if setup.describe else None},
  )


def run(config, workdir: str) -> dict:
  """Runs (or resumes) the experiment `config` names in `workdir`; returns its summary.
  One process per workdir: a second one is refused (`workdir_lock`); of several hosts running
  one experiment, the first holds it."""
  skills.check(config)
  staged = skills.stages(config)
  with workdir_lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    if staged:  # e.g. P-DARTS: stages chained in one workdir
      return stages.run_stages(config, workdir, staged, _run_one)
    return _run_one(config, workdir)


def _run_one(config, workdir: str) -> dict:
  skills.check(config)
  cache_dir = compilation_cache.enable(config.compilation_cache_dir)
  experiment = skills.build(config)
  if isinstance(experiment, base.SkillSetup):
    experiment = program_experiment(experiment, config)
  return loop.train_and_evaluate(config, workdir, experiment, cache_on=cache_dir is not None)
