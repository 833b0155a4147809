"""Real optimizer updates of parameter sets, shared by every step builder.

This module owns how a gradient becomes a parameter update: one set's optax
update, and the validation stage's update of its sets, where a maximized set
(LPT's test creator) ascends its hypergradient.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from skillearn_jax.core import program as prog

PyTree = Any


def apply_update(param_set: prog.ParamSet, grads, opt_state, params):
  """(new params, new optimizer state) of one set."""
  updates, opt_state = param_set.optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def apply_validation_grads(
  program: prog.Program,
  params: Mapping[str, PyTree],
  opt_states: Mapping[str, PyTree],
  grads: Mapping[str, PyTree],
):
  """Updates every validation set with its hypergradient, negated for the
  maximized ones; returns new (params, opt_states) dicts."""
  params, opt_states = dict(params), dict(opt_states)
  sets = program.sets
  for name, direction in program.validation.directions.items():
    g = grads[name]
    if direction == 'maximize':
      g = jax.tree_util.tree_map(jnp.negative, g)
    params[name], opt_states[name] = apply_update(sets[name], g, opt_states[name], params[name])
  return params, opt_states
