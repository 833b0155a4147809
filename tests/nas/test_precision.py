"""Tests for mixed precision (`net.precision`, ops.PRECISIONS): at 'bfloat16' the activations
and convolutions are bfloat16 while the parameters, batch-norm statistics, α, optimizer states
and losses stay float32; the tiny supernet's loss is within bfloat16 rounding of float32's;
exact and finite-difference hypergradients keep their direction (cosine >= 0.98 to float32's);
the evaluation network trains on tfds mock CIFAR-10 in bfloat16; bad values are refused
naming the field; and float32 stays the default of every search and evaluation config."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from configs import common
from configs import darts as darts_config
from configs import eval_cifar
from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax import skills
from skillearn_jax.nas import ops
from skillearn_jax.nas.search_network import SearchNetwork, init_alphas
from skillearn_jax.run import compare_hypergradients
from skillearn_jax.run import options
from skillearn_jax.skills import eval_cell

TINY = dict(channels=4, layers=2, nodes=2, multiplier=2)  # a normal and a reduction cell
F32 = jnp.dtype(jnp.float32)


def _dtypes(tree) -> set:
  return {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(tree)}


def test_precisions_and_defaults():
  assert ops.PRECISIONS == ('float32', 'bfloat16')
  assert SearchNetwork().precision == 'float32'
  search = darts_config.get_config('quick')
  evaluation = eval_cifar.get_config('quick')
  assert search.net.precision == evaluation.net.precision == 'float32'
  with pytest.raises(ValueError, match='precision must be one of'):
    SearchNetwork(**TINY, precision='float16').init(
      jax.random.key(0), jnp.ones((2, 8, 8, 3)), init_alphas(jax.random.key(1), 2), train=False
    )


@pytest.mark.parametrize('make', [darts_config.get_config, eval_cifar.get_config])
def test_bad_precision_is_refused_naming_the_field(make):
  config = make('quick')
  config.net.precision = 'fp16'
  with pytest.raises(config_check.ConfigError) as error:
    skills.check(config)
  assert str(error.value) == (
    "config.net.precision: 'fp16' is not allowed; allowed: ('float32', 'bfloat16')"
  )


def _search_loss(net, variables, x, labels, alphas):
  logits, updates = net.apply(variables, x, alphas, train=True, mutable=['batch_stats'])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, (logits, updates)


def test_bfloat16_supernet_loss_is_float32_and_close_to_float32s():
  net32 = SearchNetwork(**TINY)
  net16 = net32.clone(precision='bfloat16')
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
  labels = jnp.arange(8) % 10
  alphas = init_alphas(jax.random.key(1), TINY['nodes'])
  variables = jax.jit(lambda k: net32.init(k, x, alphas, train=False))(jax.random.key(2))
  # the precision changes the program, never the variables
  shapes16 = jax.eval_shape(lambda k: net16.init(k, x, alphas, train=False), jax.random.key(2))
  assert jax.tree.structure(shapes16) == jax.tree.structure(variables)
  assert _dtypes(shapes16) == _dtypes(variables) == {F32}

  def loss_and_grads(net):
    grad = jax.value_and_grad(
      lambda p, a: _search_loss(net, {**variables, 'params': p}, x, labels, a),
      argnums=(0, 1),
      has_aux=True,
    )
    return jax.jit(grad)(variables['params'], alphas)

  (loss32, (logits32, _)), (w32, a32) = loss_and_grads(net32)
  (loss16, (logits16, updates16)), (w16, a16) = loss_and_grads(net16)
  # logits, loss, batch statistics and every gradient are float32 ...
  assert logits16.dtype == loss16.dtype == F32
  assert _dtypes(updates16) == _dtypes((w16, a16)) == {F32}
  # ... and the bfloat16 program did run in bfloat16: its logits differ from float32's
  assert not np.array_equal(logits16, logits32)
  np.testing.assert_allclose(loss16, loss32, rtol=2e-2)
  np.testing.assert_allclose(logits16, logits32, atol=0.1 * float(jnp.std(logits32)) + 1e-3)
  flat = compare_hypergradients._flat
  assert compare_hypergradients._cosine(flat(w16), flat(w32)) >= 0.98
  assert compare_hypergradients._cosine(flat(a16), flat(a32)) >= 0.98


# The finite difference's step: at DARTS' 0.01 this tiny supernet's central difference is
# itself off the derivative (cosine 0.95 to exact in float32: ReLU and max-pool switch
# within the step), and bfloat16 rounding moves it further (0.96 to float32's); at 0.1
# it measures the derivative in either precision (docs/performance.md, "On a GPU").
FD_EPSILON = 0.1


@functools.lru_cache(maxsize=None)
def _hypergradient(precision: str, method: str) -> np.ndarray:
  """The architecture hypergradient (flat, float64) of one DARTS step (second order: the
  unrolled weights, and the exact Hessian-vector product or its finite difference) on the
  tiny supernet at `precision`, from the same state and batches in either precision."""
  config = darts_config.get_config('quick')
  config.update_from_flattened_dict(
    {
      'hypergradient': method,
      'fd_epsilon': FD_EPSILON,
      'net.precision': precision,
      'net.layers': TINY['layers'],
      'data.batch_size': 8,
      'data.eval_examples': 0,
    }
  )
  skills.check(config)
  setup = skills.build(config)
  params, model_state = setup.init(jax.random.key(0))
  state = core.init_state(setup.program, params, model_state)
  assert _dtypes(state.params) == _dtypes(state.opt_states) - {jnp.dtype(jnp.int32)} == {F32}
  fn = compare_hypergradients.jitted_hypergradient(
    setup.program, method, options.hypergradient_options(config)
  )
  grads = fn(state, setup.batches_at(0), jax.random.key(1))
  assert _dtypes(grads) == {F32}
  flat = compare_hypergradients._flat(grads)
  assert np.all(np.isfinite(flat))
  return flat


def _cosine(precision, method, reference_method):
  return compare_hypergradients._cosine(
    _hypergradient(precision, method), _hypergradient('float32', reference_method)
  )


def test_bfloat16_exact_hypergradient_keeps_float32s_direction():
  assert not np.array_equal(_hypergradient('bfloat16', 'exact'), _hypergradient('float32', 'exact'))
  assert _cosine('bfloat16', 'exact', 'exact') >= 0.98


def test_bfloat16_finite_difference_hypergradient_keeps_float32s_direction():
  assert _cosine('bfloat16', 'finite_difference', 'finite_difference') >= 0.98
  # and it still measures the exact hypergradient (float32's)
  assert _cosine('bfloat16', 'finite_difference', 'exact') >= 0.98


def test_bfloat16_evaluation_network_trains_on_mock_cifar10(tmp_path):
  config = eval_cifar.get_config('quick')
  config.update_from_flattened_dict(
    {
      'data.name': 'cifar10',
      'data.data_dir': str(tmp_path / 'tfds'),
      'data.batch_size': 4,
      'net.layers': 1,
      'net.channels': 4,
      'net.auxiliary_weight': 0.4,
      'net.precision': 'bfloat16',
    }
  )
  skills.check(config)
  with tfds.testing.mock_data(num_examples=16):
    experiment = skills.build(config)
    batch = experiment.batches_at(0)
  state = experiment.init(jax.random.key(0))
  step = jax.jit(experiment.step)
  losses = []
  for i in range(4):  # the same batch: the loss must fall
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['train/loss']))
    assert metrics['train/loss'].dtype == metrics['train/auxiliary_loss'].dtype == F32
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert _dtypes(state.params) == _dtypes(state.batch_stats) == {F32}
  assert _dtypes(state.opt_state) - {jnp.dtype(jnp.int32)} == {F32}
  totals = jax.jit(eval_cell.eval_step)(state, {**batch, 'mask': np.ones(4, bool)})
  assert np.isfinite(float(totals['loss']))


def test_every_search_and_evaluation_config_has_the_field():
  c = common.program_config('darts')
  common.darts_search_blocks(c)
  assert c.net.precision == 'float32'
  e = common.base_config('eval_cell')
  common.evaluation_blocks(
    e, network='cifar', dataset='cifar10', layers=2, channels=4, batch_size=8, num_epochs=1
  )
  assert e.net.precision == 'float32'
