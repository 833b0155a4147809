"""The engine: one jitted step, ascent/descent, model state, no retrace."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skillearn_jax import core


def _minmax_program(lr=0.05):
  # Stage: w tracks (up - down); validation: f = sum(w' * up) - sum(down^2 w').
  def train(p, batch, ctx):
    return 0.5 * jnp.sum((p['w'] - p['up'] + p['down']) ** 2)

  def val(p, batch, ctx):
    return jnp.sum(jnp.sin(p['w'] * batch) * p['up']) + jnp.sum((p['down'] - batch) ** 2)

  return core.Program(
    param_sets=[
      core.ParamSet('w', optax.sgd(0.1), unroll_lr=0.5),
      core.ParamSet('up', optax.sgd(lr)),
      core.ParamSet('down', optax.sgd(lr)),
    ],
    stages=[core.Stage('train', active=['w'], supporting=['up', 'down'], loss=train)],
    validation=core.Validation(val, {'up': 'maximize', 'down': 'minimize'}),
  )


def _val_objective(program, params, batches, method):
  # The objective each method climbs or descends (first order: at w, not w').
  _, metrics = core.hypergradient(
    program,
    params=params,
    opt_states={},
    model_state={},
    step=jnp.int32(0),
    batches=batches,
    key=jax.random.PRNGKey(0),
    method=method,
  )
  return float(metrics['val/objective'])


@pytest.mark.parametrize('method', core.METHODS)
def test_min_max_moves_maximized_set_uphill_and_minimized_downhill(method):
  program = _minmax_program()
  batches = {'train': None, 'val': jnp.array([0.3, -1.2, 2.0])}
  params = {
    'w': jnp.array([0.5, 1.0, -0.4]),
    'up': jnp.array([1.0, 0.2, 0.7]),
    'down': jnp.array([0.1, 0.4, -0.3]),
  }
  state = core.init_state(program, params)
  step = core.make_step(program, method=method)
  new, _ = step(state, batches, jax.random.PRNGKey(0))
  objective = lambda p: _val_objective(program, p, batches, method)
  before = objective(params)
  only_up = objective({**params, 'up': new.params['up']})
  only_down = objective({**params, 'down': new.params['down']})
  assert only_up > before
  assert only_down < before


def _bn_program():
  # A loss with model state: a running mean updated by the training stage.
  def train(p, batch, ctx):
    mean = jnp.mean(batch)
    new_stats = {'running_mean': 0.9 * ctx.model_state['running_mean'] + 0.1 * mean}
    return core.LossOutput(
      jnp.sum((p['w'] * batch - p['h']) ** 2), model_state=new_stats, metrics={'batch_mean': mean}
    )

  def val(p, batch, ctx):
    return jnp.sum((p['w'] * batch - 1.0) ** 2)

  return core.Program(
    param_sets=[
      core.ParamSet('w', optax.sgd(0.01), unroll_lr=0.01),
      core.ParamSet('h', optax.adam(1e-3)),
    ],
    stages=[core.Stage('train', active=['w'], supporting=['h'], loss=train)],
    validation=core.Validation(val, {'h': 'minimize'}),
  )


def test_model_state_flows_through_the_step_and_metrics_are_named():
  program = _bn_program()
  state = core.init_state(
    program, {'w': jnp.ones(3), 'h': jnp.zeros(3)}, model_state={'running_mean': jnp.float32(0.0)}
  )
  step = core.make_step(program, method='finite_difference')
  batches = {'train': jnp.full((3,), 2.0), 'val': jnp.ones(3)}
  state, metrics = step(state, batches, jax.random.PRNGKey(0))
  assert float(state.model_state['running_mean']) == pytest.approx(0.2)
  assert int(state.step) == 1
  for name in (
    'train/loss',
    'train/batch_mean',
    'train/grad_norm/w',
    'val/loss',
    'val/objective',
    'hypergrad/h/norm',
  ):
    assert name in metrics, name


def test_second_call_with_same_shapes_compiles_nothing():
  program = _bn_program()
  state = core.init_state(
    program, {'w': jnp.ones(3), 'h': jnp.zeros(3)}, model_state={'running_mean': jnp.float32(0.0)}
  )
  traces = []

  def counted(state, batches, key):
    traces.append(1)
    return core.make_step(program, method='exact', jit=False)(state, batches, key)

  step = jax.jit(counted)
  batches = {'train': jnp.full((3,), 2.0), 'val': jnp.ones(3)}
  for i in range(3):
    state, _ = step(state, batches, jax.random.fold_in(jax.random.PRNGKey(0), i))
  assert len(traces) == 1
  jitted = core.make_step(program, method='exact')
  jitted(state, batches, jax.random.PRNGKey(0))
  jitted(state, batches, jax.random.PRNGKey(1))
  assert jitted._cache_size() == 1


def test_stages_first_order_differs_from_validation_first():
  program = _bn_program()
  init = core.init_state(
    program, {'w': jnp.ones(3), 'h': jnp.zeros(3)}, model_state={'running_mean': jnp.float32(0.0)}
  )
  batches = {'train': jnp.array([2.0, 1.0, 0.5]), 'val': jnp.ones(3)}
  outs = {}
  for order in core.ORDERS:
    step = core.make_step(program, method='exact', order=order)
    outs[order], _ = step(init, batches, jax.random.PRNGKey(0))
  # Validation-first: w's real step already sees the updated h.
  vf, sf = outs['validation_first'], outs['stages_first']
  assert not np.allclose(vf.params['w'], sf.params['w'])
  with pytest.raises(ValueError, match="order: unknown value 'sideways'"):
    core.make_step(program, order='sideways')


def test_init_state_names_missing_sets():
  with pytest.raises(ValueError, match=r"missing \['h'\]"):
    core.init_state(_bn_program(), {'w': jnp.ones(3)})


def test_real_stage_update_uses_the_optimizer():
  program = _bn_program()
  state = core.init_state(
    program, {'w': jnp.ones(3), 'h': jnp.zeros(3)}, model_state={'running_mean': jnp.float32(0.0)}
  )
  batches = {'train': jnp.full((3,), 2.0), 'val': jnp.ones(3)}
  new, _ = core.make_step(program, method='first_order')(state, batches, jax.random.PRNGKey(0))
  h = new.params['h']
  grad_w = 2 * (1.0 * 2.0 - h) * 2.0  # d/dw of (w*x - h)^2 at w=1, x=2
  chex.assert_trees_all_close(new.params['w'], 1.0 - 0.01 * grad_w, rtol=1e-6)
