"""A parameter set and its optimizer state as one flat vector, and back.

This module owns `ravel`, which turns one set's parameter pytree into a
single vector and its optax state into the state the same optimizer keeps
for that vector, with the functions that undo both. The gradient loop
(`core.gradient_loop`) carries the DARTS supernet's weights (105 leaves at 5
cells) through its iterations this way: its unrolled step, its
finite-difference points and its optimizer update are then a handful of
vector operations, and its loop carry a handful of buffers, instead of a
kernel and a buffer per leaf shape and operation. The
values are the same up to float rounding (a global norm sums in another
order). A set is left as it is (`ravel` returns None) when flattening would
not be faithful: fewer than two leaves, mixed dtypes, or an optimizer whose
state for the vector is not its state for the tree with each params-shaped
subtree raveled (`optax.masked`, per-leaf hyperparameters).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import optax
from jax.flatten_util import ravel_pytree

PyTree = Any


class FlatSet(NamedTuple):
  """A set raveled: its vector, its optimizer's state for that vector, and
  the inverses that rebuild the original trees."""

  params: jax.Array
  opt_state: PyTree
  unravel_params: Callable[[jax.Array], PyTree]
  unravel_opt_state: Callable[[PyTree], PyTree]


def _params_like(treedef, shapes):
  """Whether a node of an optimizer state has the params' structure and shapes."""

  def check(node) -> bool:
    if jax.tree_util.tree_structure(node) != treedef:
      return False
    return [getattr(x, 'shape', None) for x in jax.tree_util.tree_leaves(node)] == shapes

  return check


def ravel(
  params: PyTree, opt_state: PyTree, optimizer: optax.GradientTransformation
) -> FlatSet | None:
  """The flat form of one set, or None where it would not be faithful."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  if len(leaves) < 2 or len({x.dtype for x in leaves}) != 1:
    return None
  flat, unravel_params = ravel_pytree(params)
  is_params_like = _params_like(treedef, [x.shape for x in leaves])
  state_leaves, state_def = jax.tree_util.tree_flatten(opt_state, is_leaf=is_params_like)
  marks = [is_params_like(x) for x in state_leaves]
  flat_state = jax.tree_util.tree_unflatten(
    state_def, [ravel_pytree(x)[0] if m else x for x, m in zip(state_leaves, marks)]
  )
  try:
    expected = jax.eval_shape(optimizer.init, flat)
  except (TypeError, ValueError):
    # an optimizer that cannot take a vector (a per-leaf mask, say)
    return None
  shapes = lambda tree: jax.tree_util.tree_map(
    lambda x: (tuple(x.shape), x.dtype), jax.eval_shape(lambda t: t, tree)
  )
  if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(flat_state) or shapes(
    expected
  ) != shapes(flat_state):
    return None

  def unravel_opt_state(state):
    return jax.tree_util.tree_unflatten(
      state_def,
      [unravel_params(x) if m else x for x, m in zip(jax.tree_util.tree_leaves(state), marks)],
    )

  return FlatSet(flat, flat_state, unravel_params, unravel_opt_state)
