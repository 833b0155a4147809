"""Stage objectives and their unrolled (virtual) optimization steps.

This module owns how one learning stage is evaluated (training loss plus
gamma times the interaction function) and how its optimum is approximated by
T virtual gradient steps (Skillearn Eq. 3-4), run with `lax.scan` when T > 1.
It also returns the trajectory of iterates, which the finite-difference
reverse sweep needs. The step rule mirrors a momentum SGD optimizer so DARTS'
second-order unroll (momentum buffer and weight decay included) is exact.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from skillearn_jax.core import program as prog

PyTree = Any
tree_map = jax.tree_util.tree_map


def as_output(result) -> prog.LossOutput:
  if isinstance(result, prog.LossOutput):
    return result
  return prog.LossOutput(value=result)


def stage_objective(
  stage: prog.Stage | prog.Validation,
  params: Mapping[str, PyTree],
  batch: Any,
  ctx: prog.LossContext,
):
  """Returns (loss + gamma * interaction, (new_model_state, metrics))."""
  out = as_output(stage.loss(params, batch, ctx))
  total = out.value
  metrics = {'loss': out.value, **out.metrics}
  if stage.interaction is not None:
    inter = as_output(stage.interaction(params, batch, ctx))
    total = total + stage.gamma * inter.value
    metrics['interaction'] = inter.value
    metrics['objective'] = total
  return total, (out.model_state, metrics)


class UnrollRule(NamedTuple):
  """Per-set coefficients of the virtual step W <- W - xi*(mu*m + g + wd*W)."""

  xi: dict[str, jax.Array]
  momentum: dict[str, float]
  weight_decay: dict[str, float]
  buffer: dict[str, PyTree]  # momentum buffer m from the optimizer state


def momentum_buffer(opt_state, params: PyTree) -> PyTree:
  """The optax momentum trace inside `opt_state`, or zeros when it has none."""
  trace = optax.tree_utils.tree_get(opt_state, 'trace', default=None)
  if trace is None:
    return tree_map(jnp.zeros_like, params)
  return trace


def unroll_rule(program: prog.Program, names, opt_states, params, step) -> UnrollRule:
  sets = program.sets
  return UnrollRule(
    xi={n: jnp.asarray(sets[n].xi(step), jnp.float32) for n in names},
    momentum={n: sets[n].unroll_momentum for n in names},
    weight_decay={n: sets[n].unroll_weight_decay for n in names},
    buffer={
      n: (
        momentum_buffer(opt_states[n], params[n])
        if sets[n].unroll_momentum
        else tree_map(jnp.zeros_like, params[n])
      )
      for n in names
    },
  )


def _virtual_step(grad_fn, rule: UnrollRule, active, buf):
  grads = grad_fn(active)
  new_active, new_buf = {}, {}
  for n in active:
    mu, wd, xi = rule.momentum[n], rule.weight_decay[n], rule.xi[n]
    direction = tree_map(lambda g, w, wd=wd: g + wd * w, grads[n], active[n])
    new_buf[n] = tree_map(lambda b, d, mu=mu: mu * b + d, buf[n], direction)
    new_active[n] = tree_map(lambda w, b, xi=xi: w - xi * b, active[n], new_buf[n])
  return new_active, new_buf


def first_step(rule: UnrollRule, active: dict, grads: dict):
  """W_1 and its momentum buffer from W_0 = `active` and the gradient at W_0."""
  buf = {n: tree_map(lambda b, m=rule.momentum[n]: m * b, rule.buffer[n]) for n in active}
  # The buffer update is b <- mu*b + d; pre-scaling the optimizer's trace by
  # mu and then using mu = 1 for the first step would be wrong for T > 1, so
  # the first step is written out: b_1 = mu*m + d_0.
  first_rule = rule._replace(momentum={n: 1.0 for n in active})
  return _virtual_step(lambda _: grads, first_rule, active, buf)


def unroll(objective_of_active, active: dict, rule: UnrollRule, steps: int):
  """T virtual steps from `active`.

  Returns (W_T, trajectory) where trajectory stacks W_0 .. W_{T-1} along a
  leading axis (None when T == 1, since W_0 is `active` itself).
  """
  grad_fn = jax.grad(objective_of_active)
  w1, b1 = first_step(rule, active, grad_fn(active))
  if steps == 1:
    return w1, None

  def body(carry, _):
    w, b = carry
    return _virtual_step(grad_fn, rule, w, b), w

  (w_last, _), traj = jax.lax.scan(body, (w1, b1), None, length=steps - 1)
  traj = tree_map(lambda w0, rest: jnp.concatenate([w0[None], rest]), active, traj)
  return w_last, traj
