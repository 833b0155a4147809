"""A DARTS-shaped second-order step whose gradients share one loop body.

This module owns the engine's fast path for the programs shaped like
DARTS-2nd: one learning stage unrolled one step, whose loss is also the
validation loss (no interaction), stepped validation first, with finite
differences or exact forward-over-reverse hypergradients. Such a step
evaluates the network's gradient four or five times: the unrolled step
(stage batch), the validation gradient, the mixed product (finite
difference's +/- pair, or exact's JVP of the gradient along the adjoint) and
the real update of the stage's sets. Written out, XLA inlines and compiles a
copy of the network's backward pass for each. Here they are the iterations of
one `lax.scan` around one gradient of the shared loss: `lax.switch` picks
each iteration's inputs and what it does with the result, `lax.cond` takes
exact's product as the JVP of that same gradient in its one iteration, and
`LossContext.needs_grad` tells the loss which gradients the iteration
discards. The loss must skip those at run time (the DARTS supernet does) and
say so with `core.reads_needs_grad`, or a product would pay for a weight
gradient it throws away. The step computes what the generic one does, to
float rounding (tested against it); its program holds the network's backward
pass once (and, for exact, its JVP once), and XLA's compile time and memory
follow program size.
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
METHODS = ('finite_difference', 'exact')


class _Result(NamedTuple):
  """What one iteration's gradient gives: the loss's value and aux, the
  gradients w.r.t. the stage's and the validation's sets, and the validation
  gradient's derivative along the carried direction. Exact's product has
  only the last (zeros for the gradients), the other iterations all but the
  last (zeros for it)."""

  value: jax.Array
  aux: object
  stage: dict
  hyper: dict
  hyper_tangent: dict


class _Phase(NamedTuple):
  """One iteration: where it differentiates, on which batch, which gradients
  it keeps, whether it differentiates the gradient along the carried
  direction too, and what it does with the result."""

  name: str
  at: str  # 'active', 'solution', 'plus' or 'minus'
  on_val: bool  # the validation batch (else the stage's)
  key: str  # 'chain', 'val' or 'stage': the generic step's keys
  keeps_stage: bool
  keeps_hyper: bool
  then: Callable
  along_direction: bool = False


def _loops(method: str, options: hg.HypergradientOptions) -> bool:
  """Whether this module computes `method`: exact only forward over reverse."""
  return method in METHODS and (method != 'exact' or options.exact_mode == 'forward_over_reverse')


def applies(
  program: prog.Program,
  *,
  method: str,
  order: str,
  options: hg.HypergradientOptions = hg.HypergradientOptions(),
) -> bool:
  """Whether `program` stepped this way has the shape this module needs."""
  if not _loops(method, options) or order != 'validation_first':
    return False
  if len(program.stages) != 1:
    return False
  stage, validation = program.stages[0], program.validation
  return (
    int(stage.unroll_steps) == 1
    and not stage.uses
    and stage.interaction is None
    and validation.interaction is None
    and stage.loss is validation.loss
    and getattr(stage.loss, 'reads_needs_grad', False)
    and set(stage.supporting) == set(program.validation_sets)
    and program.validation_uses == (stage.name,)
  )


def _same_shapes(a, b) -> bool:
  shapes = lambda t: tree_map(lambda x: (x.shape, x.dtype), t)
  return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and shapes(a) == shapes(
    b
  )


def make_step(
  program: prog.Program,
  options: hg.HypergradientOptions,
  fallback,
  *,
  method: str = 'finite_difference',
):
  """step(state, batches, key) -> (state, metrics) for a program `applies`
  accepts stepped with `method`; `fallback` (the generic step) runs instead
  when the stage's and the validation's batches differ in shape, since one
  body cannot take both."""
  if not _loops(method, options):
    raise ValueError(
      f'gradient_loop: method {method!r} with exact_mode '
      f'{options.exact_mode!r} is not allowed; allowed: finite_difference, '
      'or exact with exact_mode forward_over_reverse'
    )
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
    flat = {
      n: flat_sets.ravel(state.params[n], state.opt_states[n], sets[n].optimizer)
      for n in (*stage_sets, *hyper_sets)
    }
    flat = {n: f for n, f in flat.items() if f is not None}
    params = {**state.params, **{n: f.params for n, f in flat.items()}}
    opt_states = {**state.opt_states, **{n: f.opt_state for n, f in flat.items()}}

    def objective(active, hyper, batch, ctx):
      trees = {
        n: flat[n].unravel_params(v) if n in flat else v for n, v in {**hyper, **active}.items()
      }
      return unroll_lib.stage_objective(stage, trees, batch, ctx)

    gradient = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
    val_key, stage_key = jax.random.split(key)
    # The generic step's keys: its chain of stages folds the validation key
    # with the stage's index (0), its validation objective with the number
    # of stages (1), its real update folds the stage key with 0.
    keys = {
      'chain': jax.random.fold_in(val_key, 0),
      'val': jax.random.fold_in(val_key, 1),
      'stage': jax.random.fold_in(stage_key, 0),
    }
    rule = unroll_lib.unroll_rule(program, stage_sets, opt_states, params, state.step)

    def solve(carry, result):
      solution, _ = unroll_lib.first_step(rule, carry['active'], result.stage)
      return {**carry, 'solution': solution}

    def validate(carry, result):
      # the adjoint of the unrolled step's input: -xi times the solution's
      direction = {
        n: tree_map(lambda a, xi=rule.xi[n]: 0.0 - xi * a, result.stage[n]) for n in stage_sets
      }
      r = (
        hg.fd_radius(direction, options.fd_epsilon) if method == 'finite_difference' else carry['r']
      )  # exact: unused
      return {**carry, 'direction': direction, 'r': r, 'hyper_grads': result.hyper}

    def plus(carry, result):
      return {**carry, 'plus_grads': result.hyper}

    def update_hyper(carry, grads):
      new_params, new_opt = updates.apply_validation_grads(
        program, carry['hyper'], carry['opt_states'], grads
      )
      return {
        **carry,
        'hyper_grads': grads,
        'hyper': {n: new_params[n] for n in hyper_sets},
        'opt_states': new_opt,
      }

    def minus(carry, result):
      r = carry['r']
      return update_hyper(
        carry,
        tree_map(
          lambda v, p, m: v + (p - m) / (2 * r),
          carry['hyper_grads'],
          carry['plus_grads'],
          result.hyper,
        ),
      )

    def product(carry, result):
      return update_hyper(carry, tree_map(jnp.add, carry['hyper_grads'], result.hyper_tangent))

    def update(carry, result):
      active, opt_states = dict(carry['active']), dict(carry['opt_states'])
      for n in stage_sets:
        active[n], opt_states[n] = updates.apply_update(
          sets[n], result.stage[n], opt_states[n], active[n]
        )
      return {**carry, 'active': active, 'opt_states': opt_states, 'stage_grads': result.stage}

    first = [
      _Phase('solve', 'active', False, 'chain', True, False, solve),
      _Phase('validate', 'solution', True, 'val', True, True, validate),
    ]
    last = [_Phase('update', 'active', False, 'stage', True, False, update)]
    if method == 'finite_difference':
      middle = [
        _Phase('plus', 'plus', False, 'chain', False, True, plus),
        _Phase('minus', 'minus', False, 'chain', False, True, minus),
      ]
    else:  # exact: the JVP of the gradient at the stage's sets, along v
      middle = [
        _Phase('product', 'active', False, 'chain', False, True, product, along_direction=True)
      ]
    phases = first + middle + last
    index = {p.name: i for i, p in enumerate(phases)}
    phase_keys = jnp.stack([keys[p.key] for p in phases])
    on_val = jnp.asarray([p.on_val for p in phases])
    keeps_stage = jnp.asarray([p.keeps_stage for p in phases])
    keeps_hyper = jnp.asarray([p.keeps_hyper for p in phases])
    along_direction = jnp.asarray([p.along_direction for p in phases])

    def inputs(i, carry):
      """The stage sets, batch and context iteration `i` differentiates at."""
      shifted = lambda sign: (
        lambda: tree_map(
          lambda w, d: w + sign * carry['r'] * d, carry['active'], carry['direction']
        )
      )
      points = {
        'active': lambda: carry['active'],
        'solution': lambda: carry['solution'],
        'plus': shifted(1.0),
        'minus': shifted(-1.0),
      }
      at = lax.switch(i, [points[p.at] for p in phases])
      batch = tree_map(lambda s, v: jnp.where(on_val[i], v, s), stage_batch, val_batch)
      needs = {n: keeps_stage[i] for n in stage_sets}
      needs.update({n: keeps_hyper[i] for n in hyper_sets})
      ctx = prog.LossContext(phase_keys[i], state.model_state, state.step, needs)
      return at, batch, ctx

    def plain(at, hyper, batch, ctx):
      (value, aux), (g_stage, g_hyper) = gradient(at, hyper, batch, ctx)
      return _Result(value, aux, g_stage, g_hyper, tree_map(jnp.zeros_like, g_hyper))

    def differentiated(at, direction, hyper, batch, ctx):
      # Forward over reverse, as hypergradients' exact mode: the gradient is
      # w.r.t. both sets, so every custom VJP that depends on the stage's
      # sets is linearized before the JVP reaches it.
      # The product keeps only the tangent: zeros for the primal gradients
      # let XLA drop their last kernels from this branch.
      ((value, aux), (g_stage, g_hyper)), (_, (_, t_hyper)) = jax.jvp(
        lambda a: gradient(a, hyper, batch, ctx), (at,), (direction,)
      )
      zeros = lambda tree: tree_map(jnp.zeros_like, tree)
      return _Result(value, aux, zeros(g_stage), zeros(g_hyper), t_hyper)

    def body(carry, i):
      at, batch, ctx = inputs(i, carry)
      if method == 'exact':
        # A cond, so that the iterations without the product pay a plain
        # gradient; the program holds the gradient and its JVP once each.
        result = lax.cond(
          along_direction[i],
          lambda: differentiated(at, carry['direction'], carry['hyper'], batch, ctx),
          lambda: plain(at, carry['hyper'], batch, ctx),
        )
      else:
        result = plain(at, carry['hyper'], batch, ctx)
      carry = lax.switch(i, [p.then for p in phases], carry, result)
      # Each iteration's value and aux are stacked by the scan, so the carry
      # needs no slot whose shape only a trace of the network would tell.
      return carry, (result.value, result.aux)

    active = {n: params[n] for n in stage_sets}
    hyper = {n: params[n] for n in hyper_sets}
    zeros = lambda tree: tree_map(jnp.zeros_like, tree)
    carry = {
      'active': active,
      'solution': active,
      'direction': zeros(active),
      'r': jnp.zeros((), jnp.float32),
      'hyper': hyper,
      'opt_states': opt_states,
      'hyper_grads': zeros(hyper),
      'plus_grads': zeros(hyper),
      'stage_grads': zeros(active),
    }
    carry, (values, auxes) = lax.scan(body, carry, jnp.arange(len(phases), dtype=jnp.int32))
    of_iteration = lambda i: tree_map(lambda x: x[i], auxes)
    (model_state, stage_metrics), val_aux = (
      of_iteration(index['update']),
      of_iteration(index['validate']),
    )
    if model_state is None:  # the loss keeps no model state
      model_state = state.model_state

    metrics = {
      f'{stage.name}/grad_norm/{n}': optax.global_norm(carry['stage_grads'][n]) for n in stage_sets
    }
    metrics.update({f'{stage.name}/{k}': v for k, v in stage_metrics.items()})
    metrics.update(hg.validation_metrics(values[index['validate']], val_aux, carry['hyper_grads']))
    new_params = {**state.params, **carry['active'], **carry['hyper']}
    new_opt_states = dict(carry['opt_states'])
    for n, f in flat.items():
      new_params[n] = f.unravel_params(new_params[n])
      new_opt_states[n] = f.unravel_opt_state(new_opt_states[n])
    new_state = state._replace(
      step=state.step + 1, params=new_params, opt_states=new_opt_states, model_state=model_state
    )
    return new_state, metrics

  return step
