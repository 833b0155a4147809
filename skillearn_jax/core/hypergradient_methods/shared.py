"""What several hypergradient methods share: the chain, the sweeps, the products.

This module owns `Chain` (one program's stages evaluated at one state,
batches and keys), the validation stage's metrics, the reverse sweep that
carries adjoints from the validation objective back through the stages, the
sweep through each stage's unrolled steps (`exact` forward over reverse and
`finite_difference`), and the mixed second-derivative products those sweeps
and the implicit methods take: by central difference, forward over reverse
or reverse over reverse. Each method module composes these into one function
`(chain, hyper, options) -> (grads, metrics)`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from skillearn_jax.core import program as prog
from skillearn_jax.core import unroll as unroll_lib

PyTree = Any
tree_map = jax.tree_util.tree_map


def add(a, b):
  return tree_map(jnp.add, a, b)


def scale(tree, s):
  return tree_map(lambda x: s * x, tree)


def per_set(fn, *trees):
  return {n: fn(n, *(t[n] for t in trees)) for n in trees[0]}


class Chain:
  """The stages of one program evaluated at one state, batches and keys."""

  def __init__(self, program: prog.Program, params, opt_states, model_state, step, batches, key):
    self.program = program
    self.params = params
    self.batches = batches
    self.validation_sets = program.validation_sets
    n = len(program.stages)
    self.ctx = {
      s.name: prog.LossContext(jax.random.fold_in(key, i), model_state, step)
      for i, s in enumerate(program.stages)
    }
    self.val_ctx = prog.LossContext(jax.random.fold_in(key, n), model_state, step)
    self.rules = {
      s.name: unroll_lib.unroll_rule(program, s.active, opt_states, params, step)
      for s in program.stages
    }

  # -- evaluation ------------------------------------------------------------
  def differentiable_inputs(self, stage, hyper, solutions):
    """Inputs of `stage` that depend on the remaining sets: (U part, uses)."""
    from_hyper = {n: hyper[n] for n in stage.supporting if n in hyper}
    from_uses = {u: solutions[u] for u in stage.uses}
    return from_hyper, from_uses

  def stage_fn(self, stage):
    """G(W, (U part, uses)) -> objective, for this stage's batch and key."""
    constants = {n: self.params[n] for n in stage.supporting if n not in self.validation_sets}
    batch = self.batches[stage.data_key]
    ctx = self.ctx[stage.name]

    def objective(active, inputs):
      from_hyper, from_uses = inputs
      merged = dict(constants)
      merged.update(from_hyper)
      for sol in from_uses.values():
        merged.update(sol)
      merged.update(active)
      return unroll_lib.stage_objective(stage, merged, batch, ctx)[0]

    return objective

  def active(self, stage):
    return {n: self.params[n] for n in stage.active}

  def solve(self, hyper):
    """Unrolled solutions of every stage, and their trajectories."""
    solutions, trajectories = {}, {}
    for stage in self.program.stages:
      inputs = self.differentiable_inputs(stage, hyper, solutions)
      g = self.stage_fn(stage)
      solutions[stage.name], trajectories[stage.name] = unroll_lib.unroll(
        lambda w, g=g, inputs=inputs: g(w, inputs),
        self.active(stage),
        self.rules[stage.name],
        int(stage.unroll_steps),
      )
    return solutions, trajectories

  def validation_objective(self, hyper, solutions):
    merged = {}
    for u in self.program.validation_uses:
      merged.update(solutions[u])
    merged.update(hyper)
    return unroll_lib.stage_objective(
      self.program.validation, merged, self.batches[self.program.validation.data], self.val_ctx
    )

  def current_solutions(self):
    return {s.name: self.active(s) for s in self.program.stages}

  def relevant_stages(self):
    """Stages whose solution reaches the validation objective, last first."""
    relevant = set(self.program.validation_uses)
    for stage in reversed(self.program.stages):
      if stage.name in relevant:
        relevant.update(stage.uses)
    return [s for s in reversed(self.program.stages) if s.name in relevant]


def validation_metrics(value, aux, grads):
  """The validation stage's metrics: its loss's, its objective and each
  set's hypergradient norm."""
  _, metrics = aux
  out = {f'val/{k}': v for k, v in metrics.items()}
  out['val/objective'] = value
  for n, g in grads.items():
    out[f'hypergrad/{n}/norm'] = optax.global_norm(g)
  return out


def reverse_sweep(chain: Chain, hyper, stage_vjp):
  """Shared reverse pass: adjoints flow from validation back through stages.

  `stage_vjp(stage, g, solutions, trajectories, inputs, adjoint)` returns the
  cotangent of the stage's differentiable inputs given the adjoint of its
  solution.
  """
  hyper = jax.lax.stop_gradient(hyper)
  solutions, trajectories = chain.solve(hyper)
  solutions = jax.lax.stop_gradient(solutions)
  (value, aux), (grads, adjoints) = jax.value_and_grad(
    chain.validation_objective, argnums=(0, 1), has_aux=True
  )(hyper, solutions)
  adjoints = dict(adjoints)
  for stage in chain.relevant_stages():
    inputs = chain.differentiable_inputs(stage, hyper, solutions)
    if not inputs[0] and not inputs[1]:
      continue
    adjoint = adjoints.get(stage.name)
    if adjoint is None:
      continue
    d_hyper, d_uses = stage_vjp(
      stage, chain.stage_fn(stage), solutions, trajectories, inputs, adjoint
    )
    for n, g in d_hyper.items():
      grads[n] = add(grads[n], g)
    for u, g in d_uses.items():
      adjoints[u] = add(adjoints[u], g) if u in adjoints else g
  return grads, validation_metrics(value, aux, grads)


def fd_radius(direction, epsilon):
  """DARTS' r = epsilon / ||direction|| (epsilon itself for a zero direction)."""
  norm = optax.global_norm(direction)
  return jnp.where(norm > 0, epsilon / jnp.where(norm > 0, norm, 1.0), epsilon)


def central_difference(g, w, inputs, direction, epsilon, with_w: bool):
  """(grad G(w + r d) - grad G(w - r d)) / 2r, r = epsilon / ||d||.

  Returns the mixed second derivative of G times d, w.r.t. `inputs` (and
  w.r.t. w as well when `with_w`).
  """
  r = fd_radius(direction, epsilon)
  # Both evaluations share one traced body (lax.map over the +/- pair): the
  # stage's network is traced and compiled once instead of twice.
  signs = jnp.array([1.0, -1.0], jnp.float32)
  points = tree_map(
    lambda a, b: a[None] + (r * signs).reshape((2,) + (1,) * a.ndim).astype(a.dtype) * b[None],
    w,
    direction,
  )
  argnums = (0, 1) if with_w else 1
  grad_fn = jax.grad(g, argnums=argnums)
  both = jax.lax.map(lambda point: grad_fn(point, inputs), points)
  return tree_map(lambda x: (x[0] - x[1]) / (2 * r), both)


def directional_derivative(g, w, inputs, direction, with_w: bool):
  """d/ds grad G(w + s d) at s = 0, exactly: the JVP of the gradient along d
  (forward over reverse).

  Returns the mixed second derivative of G times d, w.r.t. `inputs` (and
  w.r.t. w as well when `with_w`). The gradient is taken w.r.t. w and the
  inputs either way, so that it linearizes every custom-VJP function that
  depends on w, which forward mode could not differentiate as such.
  """
  grad_fn = jax.grad(g, argnums=(0, 1))
  _, (d_w, d_inputs) = jax.jvp(lambda w: grad_fn(w, inputs), (w,), (direction,))
  return (d_w, d_inputs) if with_w else d_inputs


def reverse_mixed_product(g, w, inputs, direction, with_w: bool):
  """The same derivative as `directional_derivative`, reverse over reverse:
  the VJP of grad_w G along `direction`, which needs no condition on the
  loss's custom VJPs."""
  _, vjp = jax.vjp(jax.grad(g), w, inputs)
  d_w, d_inputs = vjp(direction)
  return (d_w, d_inputs) if with_w else d_inputs


def exact_product(exact_mode: str):
  """The exact mixed product `exact_mode` names (an `EXACT_MODES` entry)."""
  if exact_mode == 'forward_over_reverse':
    return directional_derivative
  return reverse_mixed_product


def unroll_sweep(chain: Chain, hyper, mixed_product):
  """The reverse sweep through each stage's unrolled steps, given
  `mixed_product(g, w, inputs, direction, with_w)`: the derivative of grad G
  at w along `direction` (w.r.t. the inputs, and w when `with_w`), exact or
  by central difference."""

  def stage_vjp(stage, g, solutions, trajectories, inputs, adjoint):
    del solutions
    rule = chain.rules[stage.name]
    steps = int(stage.unroll_steps)

    # Adjoint recursion for w_{t+1} = w_t - xi*b_{t+1}, b_{t+1} = mu*b_t + d_t,
    # d_t = grad G(w_t) + wd*w_t. vb_total = vb - xi*vw; then
    # vw += (H + wd) vb_total; v_inputs += H_xw vb_total; vb = mu vb_total.
    def total_b(vw, vb):
      return per_set(lambda n, a, b: tree_map(lambda x, y: x - rule.xi[n] * y, b, a), vw, vb)

    v_inputs = tree_map(jnp.zeros_like, inputs)
    vw = adjoint
    vb = tree_map(jnp.zeros_like, adjoint)
    if steps > 1:
      later = tree_map(lambda t: t[1:][::-1], trajectories[stage.name])

      def body(carry, w_t):
        vw, vb, v_in = carry
        vbt = total_b(vw, vb)
        d_w, d_in = mixed_product(g, w_t, inputs, vbt, with_w=True)
        vw = per_set(
          lambda n, a, h, b: tree_map(lambda x, y, z: x + y + rule.weight_decay[n] * z, a, h, b),
          vw,
          d_w,
          vbt,
        )
        vb = per_set(lambda n, b: scale(b, rule.momentum[n]), vbt)
        return (vw, vb, add(v_in, d_in)), None

      (vw, vb, v_inputs), _ = jax.lax.scan(body, (vw, vb, v_inputs), later)
    vbt = total_b(vw, vb)
    d_in = mixed_product(g, chain.active(stage), inputs, vbt, with_w=False)
    return add(v_inputs, d_in)

  return reverse_sweep(chain, hyper, stage_vjp)
