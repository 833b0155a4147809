"""The ``first_order`` hypergradient: second-order terms dropped (xi -> 0).

This module owns ``first_order``: the validation objective differentiated at
the current stage parameters, as DARTS' first-order variant.
"""

from __future__ import annotations

import jax

from skillearn_jax.core.hypergradient_methods import shared
from skillearn_jax.core.hypergradient_methods.options import HypergradientOptions


def first_order(chain: shared.Chain, hyper, options: HypergradientOptions):
  del options
  solutions = chain.current_solutions()
  (value, aux), grads = jax.value_and_grad(chain.validation_objective, has_aux=True)(
    hyper, solutions
  )
  return grads, shared.validation_metrics(value, aux, grads)
