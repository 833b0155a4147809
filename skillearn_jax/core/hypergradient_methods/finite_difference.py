"""The ``finite_difference`` hypergradient (DARTS Eq. 7-8, Skillearn Eq. 17, 22-24).

This module owns ``finite_difference``: a reverse sweep over the stages
(`shared.unroll_sweep`) in which each stage's mixed second derivative times
the adjoint vector is the central difference of its gradient at
W +/- eps*v with eps = fd_epsilon / ||v||. All active sets of a stage are
perturbed jointly along their joint adjoint, which is the same directional
derivative as perturbing them one by one, at half the cost. T-step unrolls
are swept step by step (the W-W Hessian term uses the same difference).
"""

from __future__ import annotations

import functools

from skillearn_jax.core.hypergradient_methods import shared
from skillearn_jax.core.hypergradient_methods.options import HypergradientOptions


def finite_difference(chain: shared.Chain, hyper, options: HypergradientOptions):
  return shared.unroll_sweep(
    chain, hyper, functools.partial(shared.central_difference, epsilon=options.fd_epsilon)
  )
