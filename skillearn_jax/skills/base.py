"""What an experiment hands to the training loop, and what a Skillearn program adds.

This module owns the two shapes a registered experiment's `build(config)` returns:
- `Experiment`: everything the one training loop (`run.loop`) needs of any run — how to
  initialise the state, the pure step it jits, the batches of each step, and optional hooks
  (per-step scalars such as learning rates, held-out evaluation at epoch ends, per-epoch
  means, a description of what was learned, artifacts, summary fields). Evaluation of a
  searched cell returns one directly.
- `Stages`: a run chained from several experiments in one workdir (P-DARTS' stages): the
  config of each stage from the earlier stages' summaries, and the run's summary at the end.
- `SkillSetup`: a Skillearn program (the core `Program`) with its parameter init and batches;
  the runner turns it into an `Experiment` whose step is the engine's, and `hypercheck`
  compares hypergradient methods on it. Optional hooks let a skill describe its state (e.g.
  a genotype), write its own plots, or supply a closed-form hypergradient for checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

from skillearn_jax import core

PyTree = Any


@dataclasses.dataclass
class SkillSetup:
  program: core.Program
  # key -> (params by set name, model state)
  init: Callable[[Any], tuple[Mapping[str, PyTree], PyTree]]
  # step -> batches keyed by stage data keys and the validation data key;
  # a pure function of the step so that runs resume and repeat exactly.
  batches_at: Callable[[int], Mapping[str, Any]]
  steps_per_epoch: int = 1
  # (state, batches) -> {reference: {set: gradient}} (references: 'unrolled', the
  # T-step unroll's hypergradient; 'optimum', the one at the inner problem's
  # true optimum), or None where no closed form exists.
  closed_form: Optional[Callable[[core.ProgramState, Any], Any]] = None
  # state -> JSON-able summary of what was learned (e.g. a genotype).
  describe: Optional[Callable[[core.ProgramState], Mapping[str, Any]]] = None
  # (state, workdir, history) -> None: artifacts (genotype, plots) written at
  # each epoch end and at the end; history holds one {'epoch', 'step',
  # 'describe'} record per epoch so far.
  write_artifacts: Optional[Callable[[core.ProgramState, str, list], None]] = None
  # state -> metrics on held-out data, run at epoch ends.
  evaluate: Optional[Callable[[core.ProgramState], Mapping[str, float]]] = None
  # step -> learning rates to log, by name.
  learning_rates: Optional[Callable[[int], Mapping[str, float]]] = None
  # history -> why to stop early (e.g. DARTS+), or None; asked at epoch ends.
  should_stop: Optional[Callable[[list], Optional[str]]] = None


@dataclasses.dataclass
class Experiment:
  """One run's pieces, as the training loop calls them.

  Batches and step keys are pure functions of the step (the loop folds the step into its
  key), so a resumed run repeats an uninterrupted one exactly.
  """

  # key -> the state pytree (checkpointed whole).
  init: Callable[[Any], PyTree]
  # (state, batch, key) -> (state, scalar metrics): pure, unjitted; the loop jits it once,
  # data parallel over the local devices.
  step: Callable[[PyTree, Any, Any], tuple[PyTree, Mapping[str, Any]]]
  # step -> that step's batch.
  batches_at: Callable[[int], Any]
  steps_per_epoch: int
  # Examples per step, for the examples/s figure (None: not reported).
  batch_size: Optional[int] = None
  # Name prefixes of the metrics the progress line shows first (() : held-out, then
  # validation: 'eval/', 'test/', 'val/').
  progress_metrics: tuple[str, ...] = ()
  # step -> scalars logged with that step (learning rates, drop-path probability ...).
  step_metrics: Optional[Callable[[int], Mapping[str, float]]] = None
  # state -> held-out metrics, full names, at epoch ends (every `eval_every_epochs`).
  evaluate: Optional[Callable[[PyTree], Mapping[str, float]]] = None
  # Held-out evaluation the loop runs data parallel, at the same epoch ends: `eval_step`
  # (state, batch) -> sums, pure; `eval_batches()` the padded, masked batches;
  # `eval_metrics(totals)` -> metrics from the summed sums.
  eval_step: Optional[Callable[[PyTree, Any], Mapping[str, Any]]] = None
  eval_batches: Optional[Callable[[], Any]] = None
  eval_metrics: Optional[Callable[[Mapping[str, Any]], Mapping[str, float]]] = None
  # Step metrics also logged as their mean over each epoch ('train/loss' -> 'train/epoch_loss').
  epoch_means: tuple[str, ...] = ()
  # state -> JSON-able description of what was learned, kept per epoch as the run's history.
  describe: Optional[Callable[[PyTree], Mapping[str, Any]]] = None
  # (state, workdir, history) -> None, at epoch ends and at the end.
  write_artifacts: Optional[Callable[[PyTree, str, list], None]] = None
  # history (one {'epoch', 'step', 'describe'} per epoch so far) -> why to stop now, or None;
  # asked at epoch ends, after `describe`. A stopped run stays stopped when resumed.
  should_stop: Optional[Callable[[list], Optional[str]]] = None
  # workdir -> None, once before training (e.g. the evaluated genotype and its diagrams).
  prepare_workdir: Optional[Callable[[str], None]] = None
  # (state, final metrics) -> fields of summary.json beside steps, epochs and metrics.
  summary: Optional[Callable[[PyTree, Mapping[str, float]], Mapping[str, Any]]] = None


@dataclasses.dataclass
class Stages:
  """A run made of `count` experiments chained in one workdir (`run.stages` runs them)."""

  count: int
  # (stage index, the summaries of the stages before it) -> the stage's config.
  config_for: Callable[[int, list], Any]
  # (every stage's summary, workdir, write) -> the run's summary; with `write` it also writes
  # the run's own artifacts (genotype.json, plots) into workdir.
  finish: Callable[[list, str, bool], Mapping[str, Any]]
