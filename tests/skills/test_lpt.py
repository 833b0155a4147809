"""LPT on the core: Eq. 11's objectives, the creator's pull, the ablations.

A linear testee (BatchNorm without affine, one Dense whose logits the alphas
scale) stands in for the supernet where a test is about the program rather
than the search space, so its per-example losses are known by construction
and second-order checks compile in seconds.
"""

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import lpt_darts
from skillearn_jax import core
from skillearn_jax.data import catalog
from skillearn_jax.nas import tester
from skillearn_jax import config_check
from skillearn_jax import skills
from skillearn_jax.skills import lpt_plots
from skillearn_jax.skills import lpt

CLASSES = 2
BANK_SIZE = 12
HARD, EASY = np.array([0, 1]), np.array([2, 3])  # rows of the bank batch


class LinearTestee(nn.Module):
  """Supernet stand-in with the same call signature."""

  num_classes: int = CLASSES

  @nn.compact
  def __call__(self, x, alphas, *, train):
    x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False)(
      x.reshape(x.shape[0], -1)
    )
    return nn.Dense(self.num_classes)(x) * (1.0 + jnp.tanh(alphas['normal']).mean())


def _config(mode='full', weight_lambda=1.0, weight_gamma=1.0):
  c = lpt_darts.get_config('quick')
  c.lpt.mode, c.lpt.weight_lambda, c.lpt.weight_gamma = (mode, weight_lambda, weight_gamma)
  return c


def _batches():
  """Bank rows 0-1 are +1 images, rows 2-3 are -1 images, all labelled 1."""
  rng = np.random.default_rng(0)

  def random_batch():
    return {
      'image': rng.normal(size=(4, 8, 8, 1)).astype(np.float32),
      'label': rng.integers(0, CLASSES, 4).astype(np.int32),
    }

  signs = np.array([1, 1, -1, -1], np.float32)[:, None, None, None]
  bank = {
    'image': np.broadcast_to(signs, (4, 8, 8, 1)).copy(),
    'label': np.ones(4, np.int32),
    'position': np.array([5, 0, 9, 3], np.int32),
  }
  return {lpt.DATA: {'train': random_batch(), 'bank': bank, 'tester_val': random_batch()}}


def _setup(mode='full', **kwargs):
  """(program, state, net, encoder, batches); the testee is confidently
  right on the -1 images and confidently wrong on the +1 images."""
  config = _config(mode, **kwargs)
  net, encoder = LinearTestee(), tester.make_encoder('tiny')
  program, _ = lpt.lpt_program(net, encoder, CLASSES, config, steps_per_epoch=10)
  params, model_state = lpt.init_lpt(
    jax.random.PRNGKey(0),
    net,
    encoder,
    config,
    num_classes=CLASSES,
    image_shape=(8, 8, 1),
    bank_size=BANK_SIZE,
  )
  # logits = (0.05, -0.05) . sum of normalized pixels = (+-3.2, -+3.2).
  kernel = np.tile(np.array([[0.05, -0.05]], np.float32), (64, 1))
  params[lpt.WEIGHTS] = {'Dense_0': {'kernel': jnp.asarray(kernel), 'bias': jnp.zeros(CLASSES)}}
  state = core.init_state(program, params, model_state)
  return program, state, net, encoder, _batches()


def _ctx(state):
  return core.LossContext(jax.random.PRNGKey(0), state.model_state, state.step)


def _hypergradient(program, state, batches, method):
  grads, _ = jax.jit(
    lambda s: core.hypergradient(
      program,
      params=s.params,
      opt_states=s.opt_states,
      model_state=s.model_state,
      step=s.step,
      batches=batches,
      key=jax.random.PRNGKey(0),
      method=method,
    )
  )(state)
  return grads


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def _constant_creator(state, bias):
  """Zero executor and a creator whose f is sigmoid(bias) for every input."""
  params = dict(state.params)
  params[lpt.EXECUTOR] = jax.tree_util.tree_map(jnp.zeros_like, params[lpt.EXECUTOR])
  params[lpt.CREATOR] = {
    'kernel': jnp.zeros_like(params[lpt.CREATOR]['kernel']),
    'bias': jnp.array([0.0, bias]),
  }
  return params


def _testee_losses(net, params, state, bank):
  logits, _ = net.apply(
    {'params': params[lpt.WEIGHTS], 'batch_stats': state.model_state[lpt.TESTEE_STATS]},
    bank['image'],
    params[lpt.ALPHAS],
    train=True,
    mutable=['batch_stats'],
  )
  return optax.softmax_cross_entropy_with_integer_labels(logits, bank['label'])


def test_validation_objective_by_hand():
  program, state, net, _, batches = _setup(weight_lambda=0.7)
  params = _constant_creator(state, bias=0.3)
  out = program.validation.loss(params, batches[lpt.DATA], _ctx(state))
  # Constant f: the size-normalized test loss (Eq. 9) is the plain mean.
  scale = 1.0 + float(jnp.tanh(params[lpt.ALPHAS]['normal']).mean())
  margin = 2 * 3.2 * scale * (1 / math.sqrt(1 + 1e-5))
  plain = (math.log1p(math.exp(margin)) + math.log1p(math.exp(-margin))) / 2
  # A zero executor predicts uniformly: its validation loss is log 2.
  np.testing.assert_allclose(out.metrics['tester_val_loss'], math.log(2), rtol=1e-6)
  np.testing.assert_allclose(out.metrics['test_loss'], plain, rtol=1e-4)
  np.testing.assert_allclose(out.value, plain - 0.7 * math.log(2), rtol=1e-4)


@pytest.mark.parametrize('mode', ['full', 'test_only'])
def test_tester_stage_loss_by_hand(mode):
  program, state, _, _, batches = _setup(mode, weight_gamma=0.5)
  params = _constant_creator(state, bias=-0.4)
  out = program.stage('tester').loss(params, batches[lpt.DATA], _ctx(state))
  test_term = 1 / (1 + math.exp(0.4)) * math.log(2)
  # Eq. 11 Stage II: L(D_er^tr) + gamma * test term; Eq. 26: test term only.
  expected = test_term if mode == 'test_only' else math.log(2) + 0.5 * test_term
  np.testing.assert_allclose(out.value, expected, rtol=1e-6)
  assert lpt.TESTER_STATS in out.model_state


@pytest.mark.parametrize('method', ['first_order', 'exact'])
def test_creator_raises_the_weight_of_examples_the_testee_gets_wrong(method):
  program, state, net, encoder, batches = _setup(weight_lambda=0.0)
  data = batches[lpt.DATA]
  losses = np.asarray(_testee_losses(net, state.params, state, data['bank']))
  assert losses[HARD].min() > 5.0 > 0.01 > losses[EASY].max()  # premise

  features, _ = tester.encode(
    encoder,
    state.params[lpt.ENCODER],
    state.model_state[lpt.TESTER_STATS],
    np.concatenate([data['bank']['image'], data['tester_val']['image']]),
    train=True,
  )
  features = features[:4]
  select = lambda creator: tester.selection_weights(creator, features)
  grads = _hypergradient(program, state, batches, method)
  # Maximized set: the update follows +gradient; f rises on the hard rows.
  _, change = jax.jvp(select, (state.params[lpt.CREATOR],), (grads[lpt.CREATOR],))
  change = np.asarray(change)
  assert change[HARD].mean() > 0 > change[EASY].mean()

  new_state, _ = core.make_step(program, method=method)(state, batches, jax.random.PRNGKey(1))
  before = np.asarray(select(state.params[lpt.CREATOR]))
  after = np.asarray(select(new_state.params[lpt.CREATOR]))
  gap = lambda f: f[HARD].mean() - f[EASY].mean()
  assert gap(after) > gap(before)


def test_second_order_methods_agree_and_reach_the_creator_through_stage_two():
  program, state, _, _, batches = _setup()
  # One real step so the momentum buffers the unroll reads are non-zero.
  state, metrics = core.make_step(program, method='first_order')(
    state, batches, jax.random.PRNGKey(1)
  )
  assert {
    'testee/loss',
    'tester/loss',
    'tester/test_term',
    'val/test_loss',
    'val/tester_val_loss',
    'hypergrad/creator/norm',
    'hypergrad/alphas/norm',
  } <= set(metrics)
  exact = _hypergradient(program, state, batches, 'exact')
  fd = _hypergradient(program, state, batches, 'finite_difference')
  first = _hypergradient(program, state, batches, 'first_order')
  for name in (lpt.ALPHAS, lpt.CREATOR):
    a, b = _flat(exact[name]), _flat(fd[name])
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.99, name
  # The tester's validation loss reaches C only through E'(C), X'(C).
  a, b = _flat(exact[lpt.CREATOR]), _flat(first[lpt.CREATOR])
  assert np.linalg.norm(a - b) > 1e-3 * np.linalg.norm(a)


def test_difficulty_only_selection_gradient_is_the_closed_form():
  program, state, net, _, batches = _setup('difficulty_only')
  assert program.validation.directions == {lpt.ALPHAS: 'minimize', lpt.SELECTION: 'maximize'}
  assert [s.name for s in program.stages] == ['testee']
  scores = jnp.linspace(-1.0, 1.0, BANK_SIZE)
  params = {**state.params, lpt.SELECTION: scores}
  state = state._replace(params=params)
  grads = _hypergradient(program, state, batches, 'first_order')
  bank = batches[lpt.DATA]['bank']
  losses = np.asarray(_testee_losses(net, params, state, bank), np.float64)
  s = 1 / (1 + np.exp(-np.asarray(scores, np.float64)[bank['position']]))
  test_loss = (s * losses).sum() / s.sum()
  # d/ds_d of sum s l / sum s with s = sigmoid(score): (l_d - T) s'(d) / sum s.
  expected = np.zeros(BANK_SIZE)
  expected[bank['position']] = (losses - test_loss) * s * (1 - s) / s.sum()
  np.testing.assert_allclose(grads[lpt.SELECTION], expected, rtol=1e-4, atol=1e-7)
  assert (expected[bank['position'][HARD]] > 0).all()


def test_build_batches_map_bank_positions():
  c = _config()
  c.data.batch_size = 8
  setup = lpt.build(c)
  data = catalog.search_data('digits')
  step = setup.batches_at(3)[lpt.DATA]
  assert set(step) == {'train', 'bank', 'tester_val'}
  _, labels = data.source.get(data.architecture_indices[step['bank']['position']])
  np.testing.assert_array_equal(step['bank']['label'], labels)
  assert not np.array_equal(step['bank']['label'], step['tester_val']['label'])
  assert set(setup.learning_rates(0)) == {'lr/weights', 'lr/tester', 'lr/alphas', 'lr/creator'}


def test_monitor_metrics_and_plots(tmp_path):
  c = _config()
  c.data.batch_size, c.data.eval_examples, c.lpt.grid_examples = 8, 20, 3
  net, encoder = LinearTestee(10), tester.make_encoder('tiny')
  params, model_state = lpt.init_lpt(
    jax.random.PRNGKey(0), net, encoder, c, num_classes=10, image_shape=(8, 8, 1), bank_size=20
  )
  state = core.init_state(lpt.lpt_program(net, encoder, 10, c, 10)[0], params, model_state)
  monitor = lpt.Monitor(net, encoder, c, catalog.search_data('digits'))
  result = monitor.results(state)
  assert result['losses'].shape == result['selection'].shape == (20,)
  metrics = monitor.evaluate(state)
  f, losses = result['selection'], result['losses']
  assert metrics['test_loss'] == pytest.approx((f * losses).sum() / f.sum(), rel=1e-5)
  assert metrics['plain_val_loss'] == pytest.approx(losses.mean(), rel=1e-5)
  assert metrics['test_loss'] != pytest.approx(metrics['plain_val_loss'], rel=1e-6)
  assert set(metrics) == {'valid_accuracy', 'test_loss', 'plain_val_loss', 'selection_mean'}
  described = monitor.describe(state)
  assert sum(described['selection_histogram']) == 20
  history = [{'epoch': e, 'step': e, 'describe': described} for e in (1, 2)]
  monitor.write_artifacts(state, str(tmp_path), history)
  for name in ('plots/selection_over_time.png', 'plots/selection_extremes.png', 'genotype.json'):
    assert os.path.getsize(tmp_path / name) > 0, name
  most, least = lpt_plots.extremes(f, 3)
  np.testing.assert_array_equal(np.sort(f[most]), np.sort(f)[-3:])
  np.testing.assert_array_equal(np.sort(f[least]), np.sort(f)[:3])


def test_difficulty_only_build_has_one_scalar_per_bank_example():
  setup = lpt.build(_config('difficulty_only'))
  params, _ = jax.eval_shape(setup.init, jax.random.PRNGKey(0))
  bank_size = len(catalog.search_data('digits').architecture_indices)
  assert params[lpt.SELECTION].shape == (bank_size,)
  assert set(params) == {lpt.WEIGHTS, lpt.ALPHAS, lpt.SELECTION}
  assert 'tester_val' not in setup.batches_at(0)[lpt.DATA]


def test_config_variants_and_defaults():
  c = lpt_darts.get_config('')
  assert c.hypergradient == 'finite_difference'
  assert (c.lpt.mode, c.lpt.encoder, c.lpt.weight_lambda, c.lpt.weight_gamma) == (
    'full',
    'resnet18',
    1.0,
    1.0,
  )
  assert (c.tester_optim.lr, c.tester_optim.momentum, c.tester_optim.weight_decay) == (
    0.025,
    0.9,
    3e-4,
  )
  assert (
    c.creator_optim.lr,
    c.creator_optim.b1,
    c.creator_optim.b2,
    c.creator_optim.weight_decay,
  ) == (3e-4, 0.5, 0.999, 1e-3)
  assert lpt_darts.get_config('1st').hypergradient == 'first_order'
  assert lpt_darts.get_config('2nd').hypergradient == 'finite_difference'
  assert lpt_darts.get_config('r50').lpt.encoder == 'resnet50'
  for mode in ('difficulty_only', 'test_only'):
    assert lpt_darts.get_config(mode).lpt.mode == mode
  quick = lpt_darts.get_config('quick')
  assert (quick.lpt.encoder, quick.data.name, quick.hypergradient) == (
    'tiny',
    'digits',
    'first_order',
  )
  with pytest.raises(ValueError, match="unknown variant 'r101'"):
    lpt_darts.get_config('r101')


@pytest.mark.parametrize(
  'field,value', [('lpt.mode', 'easy_only'), ('lpt.encoder', 'vgg'), ('lpt.weight_lambda', -1.0)]
)
def test_check_config_names_the_field(field, value):
  c = _config()
  group, name = field.split('.')
  c[group][name] = value
  with pytest.raises(config_check.ConfigError, match=f'config.{field}'):
    skills.check(c)
