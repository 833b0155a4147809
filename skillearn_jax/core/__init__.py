"""Skillearn core: programs in the paper's terms, hypergradients, the engine.

Knows nothing of neural architectures or images; every case study is a
`Program` built on these names.
"""

from skillearn_jax.core import gradient_loop
from skillearn_jax.core.engine import ORDERS, ProgramState, init_state, make_step
from skillearn_jax.core.hypergradients import (
  EXACT_MODES,
  METHODS,
  HypergradientOptions,
  hypergradient,
)
from skillearn_jax.core.program import (
  DIRECTIONS,
  LossContext,
  LossOutput,
  ParamSet,
  Program,
  ProgramError,
  Stage,
  Validation,
  reads_needs_grad,
)

__all__ = [
  'DIRECTIONS',
  'EXACT_MODES',
  'METHODS',
  'ORDERS',
  'HypergradientOptions',
  'LossContext',
  'LossOutput',
  'ParamSet',
  'Program',
  'ProgramError',
  'ProgramState',
  'Stage',
  'Validation',
  'gradient_loop',
  'hypergradient',
  'init_state',
  'make_step',
  'reads_needs_grad',
]
