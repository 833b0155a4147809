"""What every skill hands to the runner and to `hypercheck`.

A skill turns a config into a `SkillSetup`: the core `Program`, how to
initialize its parameters and model state, and where each step's batches
come from. Optional hooks let a skill describe its state (e.g. a genotype),
write its own plots, or supply a closed-form hypergradient for checks.
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
  # (state, batches) -> {set: gradient} or None where no closed form exists.
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
