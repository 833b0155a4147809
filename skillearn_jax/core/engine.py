"""The engine: a Skillearn program becomes one pure, jitted training step.

This module owns the training state (parameters by set name, optimizer
states, model state such as BatchNorm statistics, step counter) and the step
`(state, batches, key) -> (state, metrics)` that performs one iteration of
the paper's Algorithm 1: the hypergradient update of the validation-stage
sets (gradient ascent for maximized ones) and the real optimizer update of
each stage's active sets, in stage order. By default the validation sets move
first, as the official DARTS and LPT code do; `order='stages_first'` runs the
learning stages first, as Algorithm 1 is written.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from skillearn_jax.core import gradient_loop as gradient_loop_lib
from skillearn_jax.core import hypergradients as hg
from skillearn_jax.core import program as prog
from skillearn_jax.core import unroll as unroll_lib
from skillearn_jax.core import updates

PyTree = Any
ORDERS = ('validation_first', 'stages_first')


class ProgramState(NamedTuple):
  """Everything that changes during training, as one pytree."""

  step: jax.Array
  params: dict[str, PyTree]
  opt_states: dict[str, PyTree]
  model_state: PyTree


def init_state(
  program: prog.Program, params: Mapping[str, PyTree], model_state: PyTree = None
) -> ProgramState:
  """Initial state; `params` must hold every set of the program."""
  sets = program.sets
  missing = sorted(set(sets) - set(params))
  extra = sorted(set(params) - set(sets))
  if missing or extra:
    raise ValueError(
      f'init_state: params must hold exactly the program\'s '
      f'sets {sorted(sets)}; missing {missing}, unknown {extra}'
    )
  params = dict(params)
  return ProgramState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_states={n: sets[n].optimizer.init(params[n]) for n in sets},
    model_state=model_state if model_state is not None else {},
  )


def validation_update(program, state: ProgramState, batches, key, *, method, options):
  grads, metrics = hg.hypergradient(
    program,
    params=state.params,
    opt_states=state.opt_states,
    model_state=state.model_state,
    step=state.step,
    batches=batches,
    key=key,
    method=method,
    options=options,
  )
  params, opt_states = updates.apply_validation_grads(
    program, state.params, state.opt_states, grads
  )
  return state._replace(params=params, opt_states=opt_states), metrics


def stage_updates(program, state: ProgramState, batches, key):
  """One real optimizer step per stage, in order; later stages see the
  freshly updated solutions of earlier ones."""
  params, opt_states = dict(state.params), dict(state.opt_states)
  model_state = state.model_state
  metrics = {}
  sets = program.sets
  for i, stage in enumerate(program.stages):
    ctx = prog.LossContext(jax.random.fold_in(key, i), model_state, state.step)
    batch = batches[stage.data_key]
    others = {n: params[n] for n in stage.supporting}
    for used in stage.uses:
      others.update({n: params[n] for n in program.stage(used).active})

    def objective(active, others=others, stage=stage, batch=batch, ctx=ctx):
      return unroll_lib.stage_objective(stage, {**others, **active}, batch, ctx)

    active = {n: params[n] for n in stage.active}
    (_, (new_model_state, stage_metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
      active
    )
    for n in stage.active:
      params[n], opt_states[n] = updates.apply_update(sets[n], grads[n], opt_states[n], params[n])
      metrics[f'{stage.name}/grad_norm/{n}'] = optax.global_norm(grads[n])
    if new_model_state is not None:
      model_state = new_model_state
    metrics.update({f'{stage.name}/{k}': v for k, v in stage_metrics.items()})
  new_state = state._replace(params=params, opt_states=opt_states, model_state=model_state)
  return new_state, metrics


def make_step(
  program: prog.Program,
  *,
  method: str = 'exact',
  order: str = 'validation_first',
  options: hg.HypergradientOptions = hg.HypergradientOptions(),
  jit: bool = True,
  donate: bool = False,
  gradient_loop: bool = True,
) -> Callable:
  """Returns step(state, batches, key) -> (state, metrics), one jax.jit.

  `batches` maps each stage's data key and the validation data key to a
  batch pytree. `key` should differ per step (e.g. fold_in(key, step)).
  With `gradient_loop`, a DARTS-shaped finite-difference or exact
  (forward-over-reverse) program sends its gradients through one loop body
  (`core.gradient_loop`): the same result from a program that compiles
  faster and in less memory.
  """
  hg.lookup(method)  # refuses an unknown method now, not at the first trace
  if order not in ORDERS:
    raise ValueError(f'order: unknown value {order!r}; allowed: {ORDERS}')

  def step(state: ProgramState, batches, key):
    val_key, stage_key = jax.random.split(key)
    if order == 'validation_first':
      state, val_metrics = validation_update(
        program, state, batches, val_key, method=method, options=options
      )
      state, stage_metrics = stage_updates(program, state, batches, stage_key)
    else:
      state, stage_metrics = stage_updates(program, state, batches, stage_key)
      state, val_metrics = validation_update(
        program, state, batches, val_key, method=method, options=options
      )
    metrics = {**stage_metrics, **val_metrics}
    return state._replace(step=state.step + 1), metrics

  if gradient_loop and gradient_loop_lib.applies(
    program, method=method, order=order, options=options
  ):
    step = gradient_loop_lib.make_step(program, options, fallback=step, method=method)
  if not jit:
    return step
  return jax.jit(step, donate_argnums=(0,) if donate else ())
