"""A Skillearn program in the paper's own terms, and the rules it must obey.

This module owns the declarative description of a multi-level optimization
problem (Skillearn, Eq. 1): learnable parameter sets, the ordered learning
stages that train some of them, and the validation stage that updates the
remaining ones through hypergradients. A `Program` is plain data (names,
functions, optimizers); nothing here differentiates. Constructing a program
checks the paper's rules and refuses a malformed one with an error naming the
stage and the set at fault.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence, Union

import jax
import optax

PyTree = Any
Schedule = Callable[[jax.Array], jax.Array]
DIRECTIONS = ('minimize', 'maximize')


class ProgramError(ValueError):
  """A program that breaks Skillearn's rules."""


class LossContext(NamedTuple):
  """What a loss sees besides parameters and data."""

  key: jax.Array  # distinct per stage and per step; reused for every
  # re-evaluation of the same stage within a step
  model_state: PyTree  # e.g. BatchNorm statistics, keyed as the skill likes
  step: jax.Array
  # None, or per set name a traced boolean that is False where the caller
  # discards the gradient w.r.t. that set: a loss may then skip computing it
  # at run time (one compiled backward pass serving several gradients).
  needs_grad: Mapping[str, jax.Array] | None = None


class LossOutput(NamedTuple):
  """A loss value plus optional new model state and extra scalar metrics.

  A loss may also return a bare scalar; the engine treats it as
  `LossOutput(value)`.
  """

  value: jax.Array
  model_state: PyTree = None  # None: model state unchanged
  metrics: Mapping[str, jax.Array] = {}


# loss(params_by_set_name, batch, ctx) -> scalar | LossOutput
LossFn = Callable[[Mapping[str, PyTree], Any, LossContext], Union[jax.Array, LossOutput]]


def reads_needs_grad(loss: LossFn) -> LossFn:
  """Marks `loss` as one that skips the gradients `ctx.needs_grad` turns off.

  Only then does the engine send a step's gradients through one loop body
  (`core.gradient_loop`): a loss that computed every gradient there would
  compile faster but step slower.
  """
  loss.reads_needs_grad = True
  return loss


@dataclasses.dataclass(frozen=True)
class ParamSet:
  """A learnable parameter set with its optimizer and its unroll rule.

  The unrolled (virtual) step that approximates a stage optimum is
  W' = W - xi * (mu * m + grad + weight_decay * W), where m is the momentum
  buffer found in the optimizer state (optax `TraceState`), as DARTS does;
  with the defaults it is plain gradient descent with rate xi.
  """

  name: str
  optimizer: optax.GradientTransformation
  unroll_lr: Union[float, Schedule] = 0.0
  unroll_momentum: float = 0.0
  unroll_weight_decay: float = 0.0

  def xi(self, step: jax.Array) -> jax.Array:
    return self.unroll_lr(step) if callable(self.unroll_lr) else self.unroll_lr


@dataclasses.dataclass(frozen=True)
class Stage:
  """One learning stage: min over `active` of loss + gamma * interaction.

  `supporting` sets enter the objective but are not updated here; `uses`
  names earlier stages whose (unrolled) solutions enter the objective under
  their set names. `data` is the key of this stage's batch in the step's
  batches (default: the stage name). The optimum is approximated by
  `unroll_steps` virtual gradient steps.
  """

  name: str
  active: Sequence[str]
  loss: LossFn
  supporting: Sequence[str] = ()
  uses: Sequence[str] = ()
  interaction: LossFn | None = None
  gamma: float = 0.0
  unroll_steps: int = 1
  data: str | None = None

  @property
  def data_key(self) -> str:
    return self.name if self.data is None else self.data


@dataclasses.dataclass(frozen=True)
class Validation:
  """The validation stage: loss + gamma * interaction over stage solutions.

  `directions` maps every remaining set to 'minimize' or 'maximize' (LPT is
  max over the test creator, min over the architecture). `uses` lists the
  stages whose solutions the loss sees (default: all).
  """

  loss: LossFn
  directions: Mapping[str, str]
  interaction: LossFn | None = None
  gamma: float = 0.0
  data: str = 'val'
  uses: Sequence[str] | None = None


@dataclasses.dataclass(frozen=True)
class Program:
  """Parameter sets, ordered stages and the validation stage, checked."""

  param_sets: Sequence[ParamSet]
  stages: Sequence[Stage]
  validation: Validation

  def __post_init__(self):
    check_program(self)

  @property
  def sets(self) -> dict[str, ParamSet]:
    return {p.name: p for p in self.param_sets}

  @property
  def validation_sets(self) -> tuple[str, ...]:
    return tuple(self.validation.directions)

  @property
  def validation_uses(self) -> tuple[str, ...]:
    if self.validation.uses is None:
      return tuple(s.name for s in self.stages)
    return tuple(self.validation.uses)

  def stage(self, name: str) -> Stage:
    return {s.name: s for s in self.stages}[name]


def _unique(names: Sequence[str], what: str) -> None:
  seen = set()
  for n in names:
    if n in seen:
      raise ProgramError(f'duplicate {what} name {n!r}')
    seen.add(n)


def check_program(program: Program) -> None:
  """Raises ProgramError if `program` breaks a rule of the paper (§2.2)."""
  set_names = [p.name for p in program.param_sets]
  _unique(set_names, 'parameter set')
  _unique([s.name for s in program.stages], 'stage')
  if not program.stages:
    raise ProgramError('a program needs at least one learning stage')
  known = set(set_names)
  val_sets = set(program.validation.directions)

  active_in: dict[str, str] = {}
  earlier_stages: list[str] = []
  for stage in program.stages:
    where = f'stage {stage.name!r}'
    if isinstance(stage.active, str) or isinstance(stage.supporting, str):
      raise ProgramError(
        f'{where}: active and supporting must be sequences of set names, not a string'
      )
    if not stage.active:
      raise ProgramError(f'{where}: needs at least one active set')
    for name in list(stage.active) + list(stage.supporting):
      if name not in known:
        raise ProgramError(f'{where}: unknown parameter set {name!r}; known sets: {sorted(known)}')
    for name in stage.active:
      if name in stage.supporting:
        raise ProgramError(f'{where}: set {name!r} is both active and supporting')
      if name in active_in:
        raise ProgramError(
          f'{where}: set {name!r} is already active in stage '
          f'{active_in[name]!r}; a set is learned in one '
          'stage only'
        )
      if name in val_sets:
        raise ProgramError(f'{where}: set {name!r} is active here and also a validation-stage set')
    for name in stage.supporting:
      if name in active_in:
        raise ProgramError(
          f'{where}: set {name!r} was learned in stage {active_in[name]!r} '
          'and cannot be supporting later; list that stage in `uses` to '
          'use its solution'
        )
    for used in stage.uses:
      if used not in earlier_stages:
        raise ProgramError(
          f'{where}: `uses` names {used!r}, which is not an '
          f'earlier stage; earlier stages: {earlier_stages}'
        )
    if int(stage.unroll_steps) < 1:
      raise ProgramError(f'{where}: unroll_steps must be >= 1, got {stage.unroll_steps}')
    for name in stage.active:
      active_in[name] = stage.name
    earlier_stages.append(stage.name)

  for name, direction in program.validation.directions.items():
    if name not in known:
      raise ProgramError(
        f'validation stage: unknown parameter set {name!r}; known sets: {sorted(known)}'
      )
    if direction not in DIRECTIONS:
      raise ProgramError(
        f'validation stage: set {name!r} has direction {direction!r}; allowed: {DIRECTIONS}'
      )
    if not any(name in s.supporting for s in program.stages):
      raise ProgramError(
        f'validation stage: set {name!r} is supporting in no stage, so no stage uses it'
      )
  if program.validation.uses is not None:
    for used in program.validation.uses:
      if used not in earlier_stages:
        raise ProgramError(
          f'validation stage: `uses` names unknown stage {used!r}; stages: {earlier_stages}'
        )
  for name in set_names:
    if name not in active_in and name not in val_sets:
      raise ProgramError(
        f'parameter set {name!r} is active in no stage and '
        'not a validation-stage set, so nothing learns it'
      )
