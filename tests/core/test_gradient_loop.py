"""The second-order fast path (finite difference, exact forward over reverse):
the generic step's result from one gradient body."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skillearn_jax import core
from skillearn_jax.core import gradient_loop


def _shared_loss(with_state: bool):
  # One loss for the stage and the validation; w, a and b couple nonlinearly
  # so that the mixed second derivatives the central difference takes are
  # not zero.
  def loss(p, batch, ctx):
    w, a, b = p['w'], p['a'], p['b']
    if isinstance(w, dict):  # w held as two leaves
      w = jnp.concatenate([w['head'], w['tail']])
    value = (
      0.5 * jnp.sum((w - a * batch['x']) ** 2)
      + jnp.sum(jnp.sin(w * b) * batch['y'])
      + 0.1 * jnp.sum(a * b * w)
    )
    if not with_state:
      return value
    seen = ctx.model_state['seen'] + jnp.mean(batch['x'])
    return core.LossOutput(value, model_state={'seen': seen}, metrics={'mean_w': jnp.mean(w)})

  return core.reads_needs_grad(loss)


def _program(with_state=True, **stage_kw):
  loss = _shared_loss(with_state)
  return core.Program(
    param_sets=[
      core.ParamSet(
        'w',
        optax.sgd(0.1, momentum=0.9),
        unroll_lr=0.3,
        unroll_momentum=0.9,
        unroll_weight_decay=0.01,
      ),
      core.ParamSet('a', optax.adam(0.05)),
      core.ParamSet('b', optax.sgd(0.05)),
    ],
    stages=[core.Stage('train', active=['w'], supporting=['a', 'b'], loss=loss, **stage_kw)],
    validation=core.Validation(loss, {'a': 'minimize', 'b': 'maximize'}),
  )


def _state(program, with_state=True, split_w=False):
  w = jnp.array([0.5, 1.0, -0.4])
  params = {
    'w': {'head': w[:1], 'tail': w[1:]} if split_w else w,
    'a': jnp.array([1.0, 0.2, 0.7]),
    'b': jnp.array([0.1, 0.4, -0.3]),
  }
  return core.init_state(program, params, {'seen': jnp.zeros(())} if with_state else None)


def _batches(step, val_rows=None):
  rng = np.random.default_rng(step)
  make = lambda shape: {
    'x': jnp.asarray(rng.normal(size=shape), jnp.float32),
    'y': jnp.asarray(rng.normal(size=shape), jnp.float32),
  }
  return {'train': make(3), 'val': make(3 if val_rows is None else (val_rows, 3))}


def _run(program, state, steps, val_rows=None, method='finite_difference', **kw):
  step = core.make_step(program, method=method, **kw)
  for i in range(steps):
    state, metrics = step(
      state, _batches(i, val_rows), jax.random.fold_in(jax.random.PRNGKey(0), i)
    )
  return state, metrics


@pytest.mark.parametrize('method', gradient_loop.METHODS)
@pytest.mark.parametrize('with_state,split_w', [(True, False), (False, False), (True, True)])
def test_three_steps_equal_the_generic_step(with_state, split_w, method):
  # split_w: w is two leaves, so the loop carries it as one vector
  # (flat_sets) and must hand back the trees and their optimizer state.
  program = _program(with_state)
  assert gradient_loop.applies(program, method=method, order='validation_first')
  state = _state(program, with_state, split_w)
  looped, m_looped = _run(program, state, 3, method=method)
  generic, m_generic = _run(program, state, 3, method=method, gradient_loop=False)
  # the momentum buffer must have been used (second and third unrolls)
  assert (
    max(
      float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(generic.opt_states['w'][0].trace)
    )
    > 0
  )
  chex.assert_trees_all_close(looped, generic, rtol=1e-5, atol=1e-6)
  assert set(m_looped) == set(m_generic)
  chex.assert_trees_all_close(m_looped, m_generic, rtol=1e-5, atol=1e-6)


def test_exact_product_is_the_hypergradient_closed_form():
  # One step on a quadratic whose exact hypergradient is known in closed
  # form: G(w, a) = 0.5 (w - a x)^2 (stage) and the same loss on the
  # validation batch. w' = w - xi (w - a x); dG_val/dw' = w' - a x_v,
  # dG_val/da = -(w' - a x_v) x_v; the unrolled step's derivative
  # dw'/da = xi x, so the hypergradient is (w' - a x_v) (xi x - x_v).
  loss = core.reads_needs_grad(lambda p, b, c: 0.5 * jnp.sum((p['w'] - p['a'] * b['x']) ** 2))
  xi = 0.3
  program = core.Program(
    param_sets=[
      core.ParamSet('w', optax.sgd(0.0), unroll_lr=xi),
      core.ParamSet('a', optax.sgd(1.0)),
    ],
    stages=[core.Stage('train', active=['w'], supporting=['a'], loss=loss)],
    validation=core.Validation(loss, {'a': 'minimize'}),
  )
  assert gradient_loop.applies(program, method='exact', order='validation_first')
  w, a = jnp.array([0.5, -1.0]), jnp.array([0.7, 0.2])
  x, x_val = jnp.array([1.5, -0.5]), jnp.array([-0.3, 2.0])
  state = core.init_state(program, {'w': w, 'a': a})
  step = core.make_step(program, method='exact')
  new, metrics = step(state, {'train': {'x': x}, 'val': {'x': x_val}}, jax.random.PRNGKey(0))
  w_solved = w - xi * (w - a * x)
  expected = (w_solved - a * x_val) * (xi * x - x_val)
  # sgd(1.0) on a: the update is minus the hypergradient
  np.testing.assert_allclose(a - new.params['a'], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['hypergrad/a/norm'], jnp.linalg.norm(expected), rtol=1e-5)


@pytest.mark.parametrize('method', gradient_loop.METHODS)
def test_batches_of_other_shapes_take_the_generic_step(method):
  program = _program()
  state = _state(program)
  looped, _ = _run(program, state, 2, val_rows=2, method=method)
  generic, _ = _run(program, state, 2, val_rows=2, method=method, gradient_loop=False)
  chex.assert_trees_all_close(looped, generic, rtol=1e-6)


def test_applies_only_to_darts_shaped_second_order_steps():
  program = _program()
  fd = dict(method='finite_difference', order='validation_first')
  for method in ('implicit', 'first_order'):
    assert not gradient_loop.applies(program, method=method, order='validation_first')
  # exact goes through the loop forward over reverse only
  assert gradient_loop.applies(program, method='exact', order='validation_first')
  assert not gradient_loop.applies(
    program,
    method='exact',
    order='validation_first',
    options=core.HypergradientOptions(exact_mode='reverse_over_reverse'),
  )
  with pytest.raises(ValueError, match='first_order'):
    gradient_loop.make_step(program, core.HypergradientOptions(), None, method='first_order')
  with pytest.raises(ValueError, match='reverse_over_reverse'):
    gradient_loop.make_step(
      program, core.HypergradientOptions(exact_mode='reverse_over_reverse'), None, method='exact'
    )
  assert not gradient_loop.applies(program, method='finite_difference', order='stages_first')
  assert not gradient_loop.applies(_program(unroll_steps=2), **fd)
  assert not gradient_loop.applies(
    _program(interaction=lambda p, b, c: jnp.sum(p['w']), gamma=0.1), **fd
  )
  other = core.Program(
    param_sets=program.param_sets,
    stages=program.stages,
    validation=core.Validation(_shared_loss(True), {'a': 'minimize', 'b': 'maximize'}),
  )
  assert not gradient_loop.applies(other, **fd)  # a different loss object
  unmarked = lambda p, b, c: jnp.sum(p['w'] * p['a'] * p['b'])
  assert not gradient_loop.applies(
    core.Program(
      param_sets=program.param_sets,
      stages=[core.Stage('train', active=['w'], supporting=['a', 'b'], loss=unmarked)],
      validation=core.Validation(unmarked, {'a': 'minimize', 'b': 'maximize'}),
    ),
    **fd,
  )  # it does not read ctx.needs_grad


def _tiny_supernet_step(gradient_loop_on, method='finite_difference', primitives=None):
  from configs import common  # pylint: disable=import-outside-toplevel
  from skillearn_jax.nas import search_network  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import darts  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import nas_search  # pylint: disable=import-outside-toplevel

  config = common.program_config('darts')
  common.darts_search_blocks(config)
  config.net.layers, config.net.nodes, config.net.channels = 2, 2, 4
  config.net.multiplier = 2
  net = nas_search.make_supernet(config, 3)
  if primitives is None:
    weights, alphas, stats = nas_search.init_supernet(net, jax.random.PRNGKey(0), (8, 8, 3))
  else:  # a smaller space and one cell, for a shorter compile
    net = net.clone(primitives=primitives, layers=1)
    alphas = jax.tree_util.tree_map(
      lambda a: 300 * a,
      search_network.init_alphas(jax.random.PRNGKey(1), nodes=2, num_ops=len(primitives)),
    )
    variables = jax.jit(
      lambda a: net.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)), a, train=False)
    )(alphas)
    weights, stats = variables['params'], variables['batch_stats']
  program, _ = darts.darts_program(net, config, steps_per_epoch=10)
  state = core.init_state(
    program, {darts.WEIGHTS: weights, darts.ALPHAS: alphas}, {'batch_stats': stats}
  )
  rng = np.random.default_rng(0)
  batch = lambda: {
    'image': jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 3, 4), jnp.int32),
  }
  batches = [{'train': batch(), 'val': batch()} for _ in range(2)]
  step = core.make_step(program, method=method, gradient_loop=gradient_loop_on)
  return step, state, batches


# Exact's step on the full space compiles for ~2 min (slow-marked); three
# primitives (a conv, a pool, the skip) and one cell take every kind of gate
# and custom VJP through the product's JVP in a third of that.
@pytest.mark.parametrize(
  'method,primitives',
  [
    ('finite_difference', None),
    ('exact', ('skip_connect', 'sep_conv_3x3', 'max_pool_3x3')),
    pytest.param('exact', None, marks=pytest.mark.slow),
  ],
)
def test_supernet_steps_equal_the_generic_step_and_compile_once(method, primitives):
  step, state, batches = _tiny_supernet_step(True, method, primitives)
  generic, _, _ = _tiny_supernet_step(False, method, primitives)
  s_loop, s_generic = state, state
  for i, batch in enumerate(batches):
    key = jax.random.PRNGKey(i)
    s_loop, m_loop = step(s_loop, batch, key)
    s_generic, m_generic = generic(s_generic, batch, key)
  assert step._cache_size() == 1  # the second step did not retrace
  # The loop carries the weights as one vector (flat_sets), not leaf by leaf.
  jaxpr = jax.make_jaxpr(step)(state, batches[0], jax.random.PRNGKey(0))
  scans = [e for e in jaxpr.eqns[0].params['jaxpr'].eqns if e.primitive.name == 'scan']
  weight_leaves = len(jax.tree_util.tree_leaves(state.params['weights']))
  assert scans and max(e.params['num_carry'] for e in scans) < weight_leaves
  chex.assert_trees_all_close(s_loop.params, s_generic.params, rtol=1e-3, atol=1e-5)
  chex.assert_trees_all_close(m_loop, m_generic, rtol=1e-4, atol=1e-6)
  # The network's backward pass is in the program once, not five times:
  # count the depthwise kernel gradients (grouped convolutions) XLA keeps
  # (three copies written out: the +/- pair and exact's product, which
  # discard the weights' gradient, keep none).
  count = lambda f: len(
    re.findall(
      r'convolution\(.*feature_group_count',
      f.lower(state, batches[0], jax.random.PRNGKey(0)).compile().as_text(),
    )
  )
  looped, written_out = count(step), count(generic)
  assert 0 < looped and 3 * looped <= written_out, (looped, written_out)
