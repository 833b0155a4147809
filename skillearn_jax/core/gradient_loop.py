"""A DARTS-shaped finite-difference step whose gradients share one loop body.

This module owns the engine's fast path for the programs shaped like
DARTS-2nd: one learning stage unrolled one step, whose loss is also the
validation loss (no interaction), stepped validation first with finite
differences. Such a step evaluates the network's gradient five times: the
unrolled step (stage batch), the validation gradient, the +/- pair of the
central difference and the real update of the stage's sets. Written out, XLA
inlines and compiles a copy of the network's backward pass for each. Here
they are the iterations of one `lax.scan` around one gradient of the
shared loss: `lax.switch` picks each iteration's inputs and what it does with
the result, and `LossContext.needs_grad` tells the loss which gradients the
iteration discards. The loss must skip those at run time (the DARTS supernet
does) and say so with `core.reads_needs_grad`, or a +/- evaluation would pay
for a weight gradient it throws away. The step computes what the generic one
does, to float rounding (tested against it); its program holds the network's
backward pass once, and XLA's compile time and memory follow program size.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from skillearn_jax.core import flat_sets
from skillearn_jax.core import hypergradients as hg
from skillearn_jax.core import program as prog
from skillearn_jax.core import unroll as unroll_lib
from skillearn_jax.core import updates

tree_map = jax.tree_util.tree_map

# First order was tried too: its two gradients (the alphas' alone, the
# weights' alone) share little code, and one body saved 1 s of a 26 s compile.
METHODS = ('finite_difference',)
# The iterations, in order.
SOLVE, VALIDATE, PLUS, MINUS, UPDATE = range(5)


class _Phase(NamedTuple):
  """One iteration: where it differentiates, on which batch, which gradients
  it keeps, and what it does with them."""
  at: str           # 'active', 'solution', 'plus' or 'minus'
  on_val: bool      # the validation batch (else the stage's)
  key: str          # 'chain', 'val' or 'stage': the generic step's keys
  keeps_stage: bool
  keeps_hyper: bool
  then: Callable


def applies(program: prog.Program, *, method: str, order: str) -> bool:
  """Whether `program` stepped this way has the shape this module needs."""
  if method not in METHODS or order != 'validation_first':
    return False
  if len(program.stages) != 1:
    return False
  stage, validation = program.stages[0], program.validation
  return (int(stage.unroll_steps) == 1 and not stage.uses and
          stage.interaction is None and validation.interaction is None and
          stage.loss is validation.loss and
          getattr(stage.loss, 'reads_needs_grad', False) and
          set(stage.supporting) == set(program.validation_sets) and
          program.validation_uses == (stage.name,))


def _same_shapes(a, b) -> bool:
  shapes = lambda t: tree_map(lambda x: (x.shape, x.dtype), t)
  return (jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
          and shapes(a) == shapes(b))


def make_step(program: prog.Program, options: hg.HypergradientOptions,
              fallback):
  """step(state, batches, key) -> (state, metrics) for a program `applies`
  accepts; `fallback` (the generic step) runs instead when the stage's and
  the validation's batches differ in shape, since one body cannot take both."""
  stage, validation = program.stages[0], program.validation
  stage_sets, hyper_sets = tuple(stage.active), program.validation_sets
  sets = program.sets

  def step(state, batches, key):
    stage_batch, val_batch = batches[stage.data_key], batches[validation.data]
    if not _same_shapes(stage_batch, val_batch):
      return fallback(state, batches, key)
    # Every set the loop carries is one vector where that is faithful: per
    # leaf, each update would be a kernel and each carried tree a buffer of
    # its own (flat_sets). The loss gets the trees back.
    flat = {n: flat_sets.ravel(state.params[n], state.opt_states[n],
                               sets[n].optimizer)
            for n in (*stage_sets, *hyper_sets)}
    flat = {n: f for n, f in flat.items() if f is not None}
    params = {**state.params, **{n: f.params for n, f in flat.items()}}
    opt_states = {**state.opt_states,
                  **{n: f.opt_state for n, f in flat.items()}}

    def objective(active, hyper, batch, ctx):
      trees = {n: flat[n].unravel_params(v) if n in flat else v
               for n, v in {**hyper, **active}.items()}
      return unroll_lib.stage_objective(stage, trees, batch, ctx)

    gradient = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
    val_key, stage_key = jax.random.split(key)
    # The generic step's keys: its chain of stages folds the validation key
    # with the stage's index (0), its validation objective with the number
    # of stages (1), its real update folds the stage key with 0.
    keys = {'chain': jax.random.fold_in(val_key, 0),
            'val': jax.random.fold_in(val_key, 1),
            'stage': jax.random.fold_in(stage_key, 0)}
    rule = unroll_lib.unroll_rule(program, stage_sets, opt_states, params,
                                  state.step)

    def solve(carry, value, aux, g_stage, g_hyper):
      del value, aux, g_hyper
      solution, _ = unroll_lib.first_step(rule, carry['active'], g_stage)
      return {**carry, 'solution': solution}

    def validate(carry, value, aux, g_stage, g_hyper):
      del value, aux
      # the adjoint of the unrolled step's input: -xi times the solution's
      direction = {n: tree_map(lambda a, xi=rule.xi[n]: 0.0 - xi * a,
                               g_stage[n]) for n in stage_sets}
      return {**carry, 'direction': direction,
              'r': hg.fd_radius(direction, options.fd_epsilon),
              'hyper_grads': g_hyper}

    def plus(carry, value, aux, g_stage, g_hyper):
      del value, aux, g_stage
      return {**carry, 'plus_grads': g_hyper}

    def minus(carry, value, aux, g_stage, g_hyper):
      del value, aux, g_stage
      r = carry['r']
      grads = tree_map(lambda v, p, m: v + (p - m) / (2 * r),
                       carry['hyper_grads'], carry['plus_grads'], g_hyper)
      new_params, new_opt = updates.apply_validation_grads(
          program, carry['hyper'], carry['opt_states'], grads)
      return {**carry, 'hyper_grads': grads,
              'hyper': {n: new_params[n] for n in hyper_sets},
              'opt_states': new_opt}

    def update(carry, value, aux, g_stage, g_hyper):
      del value, aux, g_hyper
      active, opt_states = dict(carry['active']), dict(carry['opt_states'])
      for n in stage_sets:
        active[n], opt_states[n] = updates.apply_update(
            sets[n], g_stage[n], opt_states[n], active[n])
      return {**carry, 'active': active, 'opt_states': opt_states,
              'stage_grads': g_stage}

    phases = [_Phase('active', False, 'chain', True, False, solve),
              _Phase('solution', True, 'val', True, True, validate),
              _Phase('plus', False, 'chain', False, True, plus),
              _Phase('minus', False, 'chain', False, True, minus),
              _Phase('active', False, 'stage', True, False, update)]
    assert [p.then for p in phases] == [  # SOLVE, VALIDATE, PLUS, MINUS, UPDATE
        solve, validate, plus, minus, update]
    phase_keys = jnp.stack([keys[p.key] for p in phases])
    on_val = jnp.asarray([p.on_val for p in phases])
    keeps_stage = jnp.asarray([p.keeps_stage for p in phases])
    keeps_hyper = jnp.asarray([p.keeps_hyper for p in phases])

    def inputs(i, carry):
      """The stage sets, batch and context iteration `i` differentiates at."""
      shifted = lambda sign: lambda: tree_map(
          lambda w, d: w + sign * carry['r'] * d, carry['active'],
          carry['direction'])
      points = {'active': lambda: carry['active'],
                'solution': lambda: carry['solution'],
                'plus': shifted(1.0), 'minus': shifted(-1.0)}
      at = lax.switch(i, [points[p.at] for p in phases])
      batch = tree_map(lambda s, v: jnp.where(on_val[i], v, s), stage_batch,
                       val_batch)
      needs = {n: keeps_stage[i] for n in stage_sets}
      needs.update({n: keeps_hyper[i] for n in hyper_sets})
      ctx = prog.LossContext(phase_keys[i], state.model_state, state.step,
                             needs)
      return at, batch, ctx

    def body(carry, i):
      at, batch, ctx = inputs(i, carry)
      (value, aux), (g_stage, g_hyper) = gradient(at, carry['hyper'], batch,
                                                  ctx)
      carry = lax.switch(i, [p.then for p in phases], carry, value, aux,
                         g_stage, g_hyper)
      # Each iteration's value and aux are stacked by the scan, so the carry
      # needs no slot whose shape only a trace of the network would tell.
      return carry, (value, aux)

    active = {n: params[n] for n in stage_sets}
    hyper = {n: params[n] for n in hyper_sets}
    zeros = lambda tree: tree_map(jnp.zeros_like, tree)
    carry = {'active': active, 'solution': active, 'direction': zeros(active),
             'r': jnp.zeros((), jnp.float32), 'hyper': hyper,
             'opt_states': opt_states, 'hyper_grads': zeros(hyper),
             'plus_grads': zeros(hyper), 'stage_grads': zeros(active)}
    carry, (values, auxes) = lax.scan(body, carry,
                                      jnp.arange(len(phases), dtype=jnp.int32))
    of_iteration = lambda i: tree_map(lambda x: x[i], auxes)
    (model_state, stage_metrics), val_aux = (of_iteration(UPDATE),
                                             of_iteration(VALIDATE))
    if model_state is None:   # the loss keeps no model state
      model_state = state.model_state

    metrics = {f'{stage.name}/grad_norm/{n}': optax.global_norm(
        carry['stage_grads'][n]) for n in stage_sets}
    metrics.update({f'{stage.name}/{k}': v for k, v in stage_metrics.items()})
    metrics.update(hg.validation_metrics(values[VALIDATE], val_aux,
                                         carry['hyper_grads']))
    new_params = {**state.params, **carry['active'], **carry['hyper']}
    new_opt_states = dict(carry['opt_states'])
    for n, f in flat.items():
      new_params[n] = f.unravel_params(new_params[n])
      new_opt_states[n] = f.unravel_opt_state(new_opt_states[n])
    new_state = state._replace(step=state.step + 1, params=new_params,
                               opt_states=new_opt_states,
                               model_state=model_state)
    return new_state, metrics

  return step
