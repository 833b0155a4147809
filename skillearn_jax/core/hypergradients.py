"""Hypergradients of the validation objective w.r.t. the remaining sets.

This module owns the public face of the hypergradient methods: `hypergradient`
builds the chain of learning stages at one state and runs the method its name
picks from the registry (`core.hypergradient_methods`, one module per method,
where each is described), plus the names callers use: `HypergradientOptions`,
`EXACT_MODES`, `METHODS`, `lookup` (the one check of a method name) and the
shared `fd_radius` and `validation_metrics` that `core.gradient_loop` reuses.
The methods (Skillearn Eq. 4-5):

* ``exact``: the hypergradient to float rounding, forward over reverse or
  reverse over reverse as ``exact_mode`` says (the same numbers).
* ``finite_difference``: a reverse sweep whose mixed second derivatives are
  central differences (DARTS Eq. 7-8, Skillearn Eq. 17 and 22-24).
* ``first_order``: second-order terms dropped (xi -> 0).
* ``implicit``: the implicit function theorem at each stage's unrolled
  solution, the inverse Hessian applied by a truncated Neumann series.
* ``implicit_cg``: the same, the linear system solved by conjugate gradients.

Every method returns the gradient of the validation objective (the sign for
maximized sets is the engine's business) plus scalar metrics.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax

from skillearn_jax.core import program as prog
from skillearn_jax.core.hypergradient_methods import METHODS, REGISTRY, lookup
from skillearn_jax.core.hypergradient_methods import implicit as implicit_lib
from skillearn_jax.core.hypergradient_methods.options import EXACT_MODES, HypergradientOptions
from skillearn_jax.core.hypergradient_methods.shared import Chain, fd_radius, validation_metrics

PyTree = Any

__all__ = [
  'EXACT_MODES',
  'METHODS',
  'REGISTRY',
  'HypergradientOptions',
  'fd_radius',
  'hypergradient',
  'lookup',
  'neumann_contraction',
  'validation_metrics',
]


def hypergradient(
  program: prog.Program,
  *,
  params: Mapping[str, PyTree],
  opt_states: Mapping[str, PyTree],
  model_state: PyTree,
  step: jax.Array,
  batches: Mapping[str, Any],
  key: jax.Array,
  method: str = 'exact',
  options: HypergradientOptions = HypergradientOptions(),
):
  """Gradient of the validation objective w.r.t. each validation-stage set.

  Returns (grads by set name, metrics). Pure; jit it from the outside.
  """
  implementation = lookup(method)
  chain = Chain(program, params, opt_states, model_state, step, batches, key)
  hyper = {n: params[n] for n in program.validation_sets}
  return implementation(chain, hyper, options)


def neumann_contraction(
  program: prog.Program,
  *,
  options: HypergradientOptions = HypergradientOptions(),
  iterations: int = 20,
  **at,
):
  """Per stage, whether `implicit`'s Neumann series converges at this state:
  {stage: {'radius', 'curvature', 'inner_grad_norm'}} (see
  `hypergradient_methods.implicit.neumann_contraction`). `at` places it as
  `hypergradient`'s keywords do: params, opt_states, model_state, step,
  batches, key. Pure; jit it."""
  chain = Chain(program, **at)
  hyper = {n: at['params'][n] for n in program.validation_sets}
  return implicit_lib.neumann_contraction(
    chain, hyper, options, jax.random.fold_in(at['key'], len(program.stages) + 1), iterations
  )
