"""The ``implicit_cg`` hypergradient: the implicit function theorem, conjugate gradients.

This module owns ``implicit_cg``: at each stage's unrolled solution w*, as
``implicit``, it solves (H + wd I) x = adjoint, H the Hessian of the stage
objective w.r.t. its active sets and wd each set's unroll weight decay, then
returns minus the stage's mixed second derivative along x w.r.t. its
differentiable inputs. The solve is ``cg_steps`` iterations of conjugate
gradients (`jax.scipy.sparse.linalg.cg`) rather than a Neumann series: it
needs no step size and solves a d-dimensional system in d iterations in
exact arithmetic, but like any CG it assumes H + wd I positive definite at
w*. Hessian-vector products are taken as ``exact_mode`` says; stages compose
over chains through the shared reverse sweep. Its program holds three
second-derivative products per stage (CG's initial residual, its loop body,
the final mixed product) where ``implicit``'s scan holds one.
"""

from __future__ import annotations

import jax

from skillearn_jax.core.hypergradient_methods import shared
from skillearn_jax.core.hypergradient_methods.options import HypergradientOptions

tree_map = shared.tree_map


def implicit_cg(chain: shared.Chain, hyper, options: HypergradientOptions):
  # The same second derivatives as exact's, taken the way exact_mode says.
  product = shared.exact_product(options.exact_mode)

  def stage_vjp(stage, g, solutions, trajectories, inputs, adjoint):
    del trajectories
    decay = chain.rules[stage.name].weight_decay
    w_star = solutions[stage.name]

    def hessian(v):
      h, _ = product(g, w_star, inputs, v, with_w=True)
      # Weight decay in the unroll rule is part of the stage objective.
      return shared.per_set(lambda n, hv, x: tree_map(lambda a, b: a + decay[n] * b, hv, x), h, v)

    # tol=0: the iteration count alone decides, as neumann_steps does.
    x, _ = jax.scipy.sparse.linalg.cg(hessian, adjoint, tol=0.0, maxiter=options.cg_steps)
    return shared.scale(product(g, w_star, inputs, x, with_w=False), -1.0)

  return shared.reverse_sweep(chain, hyper, stage_vjp)
