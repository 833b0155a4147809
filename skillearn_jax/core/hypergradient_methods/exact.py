"""The ``exact`` hypergradient: to float rounding, two ways (``exact_mode``).

This module owns ``exact``. ``'forward_over_reverse'`` (the default) runs
finite difference's reverse sweep (`shared.unroll_sweep`) with each stage's
mixed second derivative times the adjoint taken exactly, as the JVP of the
stage's gradient along the adjoint; ``'reverse_over_reverse'`` is `jax.grad`
through the unrolled stage updates, chains included. Both give the same
numbers (tested); forward over reverse keeps only one gradient's residuals
where reverse over reverse keeps those of the gradient's own backward pass
too, so it needs less memory and compiles a smaller program (measured in
docs/performance.md). It needs every `jax.custom_vjp` in the losses to sit where the
inner gradient linearizes it (the networks here have none left in their
backward passes); reverse over reverse has no such condition.
"""

from __future__ import annotations

import jax

from skillearn_jax.core.hypergradient_methods import shared
from skillearn_jax.core.hypergradient_methods.options import HypergradientOptions


def exact(chain: shared.Chain, hyper, options: HypergradientOptions):
  if options.exact_mode == 'forward_over_reverse':
    return shared.unroll_sweep(chain, hyper, shared.directional_derivative)

  def objective(h):
    solutions, _ = chain.solve(h)
    return chain.validation_objective(h, solutions)

  (value, aux), grads = jax.value_and_grad(objective, has_aux=True)(hyper)
  return grads, shared.validation_metrics(value, aux, grads)
