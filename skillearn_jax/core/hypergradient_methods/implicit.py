"""The ``implicit`` hypergradient: the implicit function theorem, Neumann series.

This module owns ``implicit``: at each stage's unrolled solution w*, the
inverse of the stage objective's Hessian (the unroll rule's weight decay
included) is applied to the adjoint by a truncated Neumann series with exact
Hessian-vector products, taken as ``exact_mode`` says (forward over reverse
by default); stages compose over chains of any depth through the shared
reverse sweep.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from skillearn_jax.core.hypergradient_methods import shared
from skillearn_jax.core.hypergradient_methods.options import HypergradientOptions

tree_map = shared.tree_map


def implicit(chain: shared.Chain, hyper, options: HypergradientOptions):
  # The same second derivatives as exact's, taken the way exact_mode says.
  product = shared.exact_product(options.exact_mode)

  def stage_vjp(stage, g, solutions, trajectories, inputs, adjoint):
    del trajectories
    rule = chain.rules[stage.name]
    w_star = solutions[stage.name]
    rate = {
      n: (
        rule.xi[n] if options.neumann_lr is None else jnp.asarray(options.neumann_lr, jnp.float32)
      )
      for n in w_star
    }

    # H^-1 v ~= rate * sum_{i=0}^{N} (I - rate*H)^i v, then the mixed product
    # along p = that series: N + 1 iterations of one body, so that the
    # program holds one second-derivative product rather than two.
    def body(carry, i):
      term, total, _ = carry
      last = i == options.neumann_steps
      p = shared.per_set(lambda n, s: shared.scale(s, rate[n]), total)
      direction = tree_map(lambda a, b: jnp.where(last, a, b), p, term)
      h, d_inputs = product(g, w_star, inputs, direction, with_w=True)
      # Weight decay in the unroll rule is part of the stage objective.
      term = shared.per_set(
        lambda n, t, hh: tree_map(lambda a, b: a - rate[n] * (b + rule.weight_decay[n] * a), t, hh),
        term,
        h,
      )
      return (term, shared.add(total, term), d_inputs), None

    zero_inputs = tree_map(jnp.zeros_like, inputs)
    (_, _, d_inputs), _ = jax.lax.scan(
      body, (adjoint, adjoint, zero_inputs), jnp.arange(options.neumann_steps + 1)
    )
    return shared.scale(d_inputs, -1.0)

  return shared.reverse_sweep(chain, hyper, stage_vjp)
