"""A set as one vector: the same updates as the tree, and faithful inverses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from skillearn_jax.core import flat_sets


def _params():
  rng = np.random.default_rng(0)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {'conv': {'kernel': f(3, 3, 2, 4), 'bias': f(4)}, 'head': f(4, 5)}


def _grads(i):
  rng = np.random.default_rng(100 + i)
  return jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), _params())


OPTIMIZERS = {
  # the DARTS weights' recipe: clipping, weight decay, momentum, a schedule
  'darts_sgd': optax.chain(
    optax.clip_by_global_norm(0.5),
    optax.add_decayed_weights(3e-4),
    optax.sgd(optax.cosine_decay_schedule(0.025, 10), momentum=0.9),
  ),
  'adam_wd': optax.chain(optax.add_decayed_weights(1e-3), optax.adam(3e-4, b1=0.5, b2=0.999)),
}


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_updates_on_the_vector_equal_updates_on_the_tree(name):
  optimizer = OPTIMIZERS[name]
  params = _params()
  state = optimizer.init(params)
  for i in range(2):  # a state that is not all zeros
    updates, state = optimizer.update(_grads(i), state, params)
    params = optax.apply_updates(params, updates)
  flat = flat_sets.ravel(params, state, optimizer)
  assert flat is not None
  assert flat.params.shape == (sum(x.size for x in jax.tree_util.tree_leaves(params)),)
  chex.assert_trees_all_equal(flat.unravel_params(flat.params), params)
  chex.assert_trees_all_equal(flat.unravel_opt_state(flat.opt_state), state)

  tree_params, tree_state, vec, vec_state = params, state, flat.params, flat.opt_state
  for i in range(2, 5):
    updates, tree_state = optimizer.update(_grads(i), tree_state, tree_params)
    tree_params = optax.apply_updates(tree_params, updates)
    flat_grads = ravel_pytree(_grads(i))[0]
    updates, vec_state = optimizer.update(flat_grads, vec_state, vec)
    vec = optax.apply_updates(vec, updates)
  # a global norm sums in another order: equal to float rounding
  chex.assert_trees_all_close(flat.unravel_params(vec), tree_params, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(flat.unravel_opt_state(vec_state), tree_state, rtol=1e-6, atol=1e-7)


def test_works_on_traced_values():
  optimizer = OPTIMIZERS['darts_sgd']
  params = _params()
  state = optimizer.init(params)

  @jax.jit
  def round_trip(params, state):
    flat = flat_sets.ravel(params, state, optimizer)
    return (flat.unravel_params(flat.params), flat.unravel_opt_state(flat.opt_state))

  chex.assert_trees_all_equal(round_trip(params, state), (params, state))


def test_sets_it_cannot_flatten_faithfully_are_left_alone():
  sgd = optax.sgd(0.1, momentum=0.9)
  one_leaf = {'w': jnp.ones((3,))}
  assert flat_sets.ravel(one_leaf, sgd.init(one_leaf), sgd) is None
  mixed = {'w': jnp.ones((3,)), 'n': jnp.ones((2,), jnp.int32)}
  assert flat_sets.ravel(mixed, optax.identity().init(mixed), optax.identity()) is None
  params = _params()
  # per-leaf masks and per-leaf transformations need the tree
  masked = optax.masked(sgd, {'conv': {'kernel': True, 'bias': False}, 'head': True})
  assert flat_sets.ravel(params, masked.init(params), masked) is None
  labels = {'conv': {'kernel': 'a', 'bias': 'b'}, 'head': 'a'}
  multi = optax.multi_transform({'a': sgd, 'b': optax.adam(1e-3)}, labels)
  assert flat_sets.ravel(params, multi.init(params), multi) is None
