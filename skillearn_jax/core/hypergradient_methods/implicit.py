"""The ``implicit`` hypergradient: the implicit function theorem, Neumann series.

This module owns ``implicit``: at each stage's unrolled solution w*, the
inverse of the stage objective's Hessian (the unroll rule's weight decay
included) is applied to the adjoint by a truncated Neumann series with exact
Hessian-vector products, taken as ``exact_mode`` says (forward over reverse
by default); stages compose over chains of any depth through the shared
reverse sweep. `neumann_contraction` says whether that series converges: it
estimates, per stage, the spectral radius of I - rate (H + wd I) by power
iteration with the same Hessian-vector products (the series sum_i M^i v
converges only when that radius is below 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from skillearn_jax.core.hypergradient_methods import shared
from skillearn_jax.core.hypergradient_methods.options import HypergradientOptions

tree_map = shared.tree_map


def _rates(rule, w_star, options: HypergradientOptions):
  return {
    n: (rule.xi[n] if options.neumann_lr is None else jnp.asarray(options.neumann_lr, jnp.float32))
    for n in w_star
  }


def implicit(chain: shared.Chain, hyper, options: HypergradientOptions):
  # The same second derivatives as exact's, taken the way exact_mode says.
  product = shared.exact_product(options.exact_mode)

  def stage_vjp(stage, g, solutions, trajectories, inputs, adjoint):
    del trajectories
    rule = chain.rules[stage.name]
    w_star = solutions[stage.name]
    rate = _rates(rule, w_star, options)

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


def neumann_contraction(chain: shared.Chain, hyper, options: HypergradientOptions, key, iterations):
  """Per stage: the Neumann series' contraction at the unrolled solution w*.

  Power iteration on M = I - rate (H + wd I) from a random start (H the stage
  objective's Hessian w.r.t. its active sets, the Hessian-vector products as
  `implicit` takes them) gives {'radius': ||M v_k|| / ||v_k||, an estimate of
  M's spectral radius from below, 'curvature': v_k . (H + wd I) v_k / ||v_k||^2 along the
  dominant direction (negative: H is indefinite there, which CG cannot
  handle either), 'inner_grad_norm': ||grad_W G(w*)||, how far w* is from a
  stationary point, which the implicit function theorem assumes}.
  """
  product = shared.exact_product(options.exact_mode)
  solutions, _ = chain.solve(jax.lax.stop_gradient(hyper))
  solutions = jax.lax.stop_gradient(solutions)
  out = {}
  for i, stage in enumerate(chain.program.stages):
    rule = chain.rules[stage.name]
    w_star = solutions[stage.name]
    inputs = chain.differentiable_inputs(stage, hyper, solutions)
    g = chain.stage_fn(stage)
    rate = _rates(rule, w_star, options)

    def curvature_times(v, g=g, w_star=w_star, inputs=inputs, rule=rule):
      h, _ = product(g, w_star, inputs, v, with_w=True)
      return shared.per_set(
        lambda n, hv, x: tree_map(lambda a, b: a + rule.weight_decay[n] * b, hv, x), h, v
      )

    def normalized(v):
      norm = optax.global_norm(v)
      return shared.scale(v, 1.0 / jnp.where(norm > 0, norm, 1.0))

    leaves, treedef = jax.tree_util.tree_flatten(w_star)
    keys = jax.random.split(jax.random.fold_in(key, i), len(leaves))
    start = jax.tree_util.tree_unflatten(
      treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )

    def body(v, _, rate=rate, curvature_times=curvature_times):
      hv = curvature_times(v)
      mv = shared.per_set(lambda n, a, b: tree_map(lambda x, y: x - rate[n] * y, a, b), v, hv)
      return normalized(mv), (optax.global_norm(mv), optax.tree_utils.tree_vdot(v, hv))

    _, (radii, curvatures) = jax.lax.scan(body, normalized(start), None, length=iterations)
    grad_w = jax.grad(g)(w_star, inputs)
    out[stage.name] = {
      'radius': radii[-1],
      'curvature': curvatures[-1],
      'inner_grad_norm': optax.global_norm(grad_w),
    }
  return out
