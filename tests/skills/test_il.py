"""Interleaving learning on the core: the chain of Eq. 32, its hypergradient
against the paper's update equations, agreeing methods, a real supernet step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import il_darts
from skillearn_jax import core
from skillearn_jax.nas import search_network
from skillearn_jax import config_check
from skillearn_jax import skills
from skillearn_jax.skills import multitask
from skillearn_jax.skills import nas_search
from skillearn_jax.skills import il

LABELS = ('a', 'b')
CLASSES = {'a': 3, 'b': 2}
XI, LAM = 0.01, 100.0


def _smooth_loss(k, stage):
  """A tiny smooth learner: features mix two activations by softmax(alphas),
  a linear head per task; the stand-in for the supernet."""
  encoder, head = il.encoder_set(stage), il.head_set(stage)

  def loss(params, batch, ctx):
    del ctx
    mix = jax.nn.softmax(params['alphas'])
    z = batch['x'] @ params[encoder]['w']
    features = mix[0] * jnp.tanh(z) + mix[1] * jnp.sin(z)
    logits = features @ params[head]['classifier']
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']).mean()

  return loss


def _smooth_program(labels=LABELS, rounds=2, momentum=0.0):
  return il.il_program(
    labels,
    rounds,
    LAM,
    learner_loss=_smooth_loss,
    weight_set=lambda name: core.ParamSet(
      name, optax.sgd(XI, momentum=momentum or None), unroll_lr=XI, unroll_momentum=momentum
    ),
    arch_set=core.ParamSet('alphas', optax.adam(1e-2)),
  )


def _smooth_state(program, labels=LABELS, rounds=2):
  key = jax.random.PRNGKey(0)
  params = {'alphas': jnp.array([0.3, -0.2])}
  for i, stage in enumerate(il.stage_order(labels, rounds)):
    label = labels[i % len(labels)]
    # Distinct encoders per stage so every interaction term is non-zero.
    params[il.encoder_set(stage)] = {'w': jax.random.normal(jax.random.fold_in(key, i), (4, 3))}
    params[il.head_set(stage)] = {
      'classifier': jax.random.normal(jax.random.fold_in(key, 100 + i), (3, CLASSES[label]))
    }
  return core.init_state(program, params)


def _smooth_batches(labels=LABELS):
  rng = np.random.default_rng(0)

  def batch(label):
    return {
      'x': rng.normal(size=(6, 4)).astype(np.float32),
      'y': rng.integers(0, CLASSES[label], 6).astype(np.int32),
    }

  batches = {f'train/{l}': batch(l) for l in labels}
  batches['val'] = {l: batch(l) for l in labels}
  return batches


def _hypergrad(program, state, batches, method):
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
  return grads['alphas']


def test_stages_follow_the_interleaving_order_and_chain():
  program = _smooth_program(('a', 'b', 'c'), rounds=3)
  names = [s.name for s in program.stages]
  assert names == [
    'round1/a',
    'round1/b',
    'round1/c',
    'round2/a',
    'round2/b',
    'round2/c',
    'round3/a',
    'round3/b',
    'round3/c',
  ]
  first = program.stages[0]
  assert tuple(first.uses) == () and first.interaction is None
  for previous, stage in zip(program.stages, program.stages[1:]):
    # learner 1 of round m follows learner K of round m-1
    assert tuple(stage.uses) == (previous.name,)
    assert stage.gamma == LAM
  for stage in program.stages:
    assert tuple(stage.active) == (f'{stage.name}/encoder', f'{stage.name}/head')
    assert tuple(stage.supporting) == ('alphas',)
    assert stage.data_key == f'train/{stage.name.split("/")[1]}'
  assert program.validation_uses == ('round3/a', 'round3/b', 'round3/c')
  assert dict(program.validation.directions) == {'alphas': 'minimize'}
  assert len(program.param_sets) == 1 + 2 * 9


def test_interaction_is_the_squared_distance_to_the_previous_encoder():
  program = _smooth_program()
  stage = program.stage('round2/a')
  params = {
    'round2/a/encoder': {'w': jnp.ones((2, 2)), 'v': jnp.zeros(3)},
    'round1/b/encoder': {'w': jnp.zeros((2, 2)), 'v': jnp.full(3, 2.0)},
  }
  # 4 * 1^2 + 3 * 2^2
  assert float(stage.interaction(params, None, None)) == pytest.approx(16.0)


def _paper_hypergradient(state, batches, labels=LABELS, rounds=2):
  """IL paper Eq. 6-9 written out: one-step unrolls chained over the stages,
  heads of round M unrolled at the stage's current encoder (Eq. 8), the
  validation loss summed over learners with the round-M solutions only."""
  p = state.params

  def val(alphas):
    previous, solved = None, {}
    for i, stage in enumerate(il.stage_order(labels, rounds)):
      label = labels[i % len(labels)]
      enc, head = il.encoder_set(stage), il.head_set(stage)
      loss = lambda w, h, label=label, stage=stage: _smooth_loss(0, stage)(
        {'alphas': alphas, il.encoder_set(stage): w, il.head_set(stage): h},
        batches[f'train/{label}'],
        None,
      )
      g_w, g_h = jax.grad(loss, argnums=(0, 1))(p[enc], p[head])
      w_bar = jax.tree_util.tree_map(lambda w, g: w - XI * g, p[enc], g_w)
      if previous is not None:  # Eq. 7: - 2 xi lambda (W - W_bar_prev)
        w_bar = jax.tree_util.tree_map(
          lambda wb, w, wp: wb - 2 * XI * LAM * (w - wp), w_bar, p[enc], previous
        )
      h_bar = jax.tree_util.tree_map(lambda h, g: h - XI * g, p[head], g_h)
      solved[stage] = (w_bar, h_bar)
      previous = w_bar
    total = 0.0
    for label in labels:
      stage = il.stage_name(rounds, label)
      w_bar, h_bar = solved[stage]
      total += _smooth_loss(0, stage)(
        {'alphas': alphas, il.encoder_set(stage): w_bar, il.head_set(stage): h_bar},
        batches['val'][label],
        None,
      )
    return total

  return jax.grad(val)(p['alphas'])


def test_exact_hypergradient_is_the_papers_unrolled_chain():
  program = _smooth_program()
  state = _smooth_state(program)
  batches = _smooth_batches()
  ours = _hypergrad(program, state, batches, 'exact')
  np.testing.assert_allclose(ours, _paper_hypergradient(state, batches), rtol=1e-4, atol=1e-6)
  # The chain matters: dropping the unroll (first order) gives another value.
  first = _hypergrad(program, state, batches, 'first_order')
  assert float(jnp.linalg.norm(first - ours)) > 1e-3 * float(jnp.linalg.norm(ours))


def test_exact_and_finite_difference_agree_through_the_chain():
  program = _smooth_program(momentum=0.9)
  state = _smooth_state(program)
  batches = _smooth_batches()
  # One real step so the momentum buffers the unroll reads are non-zero.
  state, _ = core.make_step(program, method='first_order')(state, batches, jax.random.PRNGKey(1))
  exact = _hypergrad(program, state, batches, 'exact')
  fd = _hypergrad(program, state, batches, 'finite_difference')
  cosine = float(exact @ fd / (jnp.linalg.norm(exact) * jnp.linalg.norm(fd)))
  assert cosine >= 0.99
  np.testing.assert_allclose(fd, exact, rtol=2e-2, atol=1e-5)


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('tasks', 'digits_a', 'at least 2'),
    ('tasks', 'digits_a,svhn_cropped', "unknown task 'svhn_cropped'"),
    ('rounds', 0, 'must be > 0'),
    ('lam', -1.0, 'must be >= 0'),
    ('coupling', 'max', "'max' is not allowed; allowed: \\('sum', 'mean'\\)"),
  ],
)
def test_config_errors_name_the_field(field, value, message):
  c = il_darts.get_config('quick')
  c.il[field] = value
  with pytest.raises(config_check.ConfigError, match=f'config.il.{field}.*{message}'):
    skills.check(c)


def test_unstable_unroll_is_warned_about_once_at_the_paper_constants(monkeypatch):
  paper = il_darts.get_config('')  # finite differences, eta = 0.025, lam = 100
  warning = il.unstable_unroll_warning(paper, num_learners=2, encoder_weights=0)
  assert '= 5 >= 2' in warning and '1 - 2 * eta * lambda = -4' in warning
  assert 'step of the 4 stages, and the unroll' in warning and 'finite-difference' in warning
  for choice in ('hypergradient=exact', 'smaller --config.il.lam', 'il.coupling=mean'):
    assert choice in warning
  # exact hypergradients differentiate the same overshooting step: still warned
  assert '-4' in il.unstable_unroll_warning(il_darts.get_config('exact'), 2, 0)
  logged = []
  monkeypatch.setattr(il, '_WARNED', set())
  monkeypatch.setattr(il.logging, 'warning', logged.append)
  for _ in range(3):  # e.g. a run of stages builds the experiment once a stage
    il.warn_once(warning)
  assert logged == [warning]


def test_building_il_warns_once_before_anything_compiles(monkeypatch):
  logged = []
  monkeypatch.setattr(il, '_WARNED', set())
  monkeypatch.setattr(il.logging, 'warning', logged.append)
  config = il_darts.get_config('quick')  # first order at the paper's eta and lambda
  skills.build(config)
  skills.build(config)
  assert len(logged) == 1 and '= -4' in logged[0] and ', and the unroll' not in logged[0]
  config.il.coupling = 'mean'  # lambda / N: safe
  skills.build(config)
  assert len(logged) == 1


@pytest.mark.parametrize(
  'overrides, weights',
  [
    (dict(lam=10.0), 0),  # 2 * 0.025 * 10 = 0.5
    (dict(lam=39.9), 0),  # just below 2
    (dict(rounds=1), 0),  # with one learner: one stage, nothing coupled
    (dict(coupling='mean'), 1000),  # 2 * 0.025 * 100 / 1000 = 0.005
  ],
)
def test_safe_constants_are_not_warned_about(overrides, weights):
  config = il_darts.get_config('')
  config.il.update(overrides)
  learners = 1 if 'rounds' in overrides else 2
  assert il.unstable_unroll_warning(config, learners, weights) is None


def test_mean_coupling_divides_by_the_number_of_encoder_weights():
  current = {'w': jnp.ones((2, 2)), 'v': jnp.zeros(3)}
  previous = {'w': jnp.zeros((2, 2)), 'v': jnp.full(3, 2.0)}
  params = {'c': current, 'p': previous}
  summed = il.encoder_interaction('c', 'p', 'sum')
  mean = il.encoder_interaction('c', 'p', 'mean')
  assert float(summed(params, None, None)) == pytest.approx(16.0)  # 4 * 1 + 3 * 4
  assert float(mean(params, None, None)) == pytest.approx(16.0 / 7)  # 7 weights
  # its gradient is 2 (W - W_prev) / N: the one-step factor is 1 - 2 eta lambda / N
  grad = jax.grad(lambda c: mean({'c': c, 'p': previous}, None, None))(current)
  np.testing.assert_allclose(grad['w'], 2 * np.ones((2, 2)) / 7, rtol=1e-6)
  np.testing.assert_allclose(grad['v'], 2 * np.full(3, -2.0) / 7, rtol=1e-6)
  program = il.il_program(
    LABELS,
    2,
    LAM,
    learner_loss=_smooth_loss,
    weight_set=lambda name: core.ParamSet(name, optax.sgd(XI), unroll_lr=XI),
    arch_set=core.ParamSet('alphas', optax.adam(1e-2)),
    coupling='mean',
  )
  stage = program.stage('round2/a')
  tied = {'round2/a/encoder': current, 'round1/b/encoder': previous}
  assert float(stage.interaction(tied, None, None)) == pytest.approx(16.0 / 7)


def test_tasks_accept_tuples_and_repeated_tasks_get_numbered_labels():
  assert multitask.parse_tasks(('cifar10', 'cifar100'), 'il.tasks') == ('cifar10', 'cifar100')
  assert multitask.learner_labels(('digits_a', 'digits_b', 'digits_a')) == (
    'digits_a_1',
    'digits_b',
    'digits_a_2',
  )


def test_paper_defaults():
  c = il_darts.get_config()
  assert multitask.parse_tasks(c.il.tasks, 'il.tasks') == ('cifar100', 'cifar10')
  assert (c.il.rounds, c.il.lam) == (2, 100.0)
  assert c.hypergradient == 'finite_difference'
  assert (c.net.layers, c.net.channels) == (8, 16)
  assert (c.weights_optim.lr, c.weights_optim.momentum, c.weights_optim.weight_decay) == (
    0.025,
    0.9,
    3e-4,
  )
  assert (c.alphas_optim.lr, c.alphas_optim.weight_decay) == (3e-4, 1e-3)
  assert (c.data.batch_size, c.num_epochs) == (64, 50)


def test_one_real_step_on_a_tiny_supernet():
  c = il_darts.get_config('quick')
  c.net.layers, c.net.channels = 1, 4  # one (reduction) cell: compile time
  c.data.batch_size, c.data.eval_examples = 4, 8
  c.il.rounds = 1  # two stages, the second with the interaction
  setup = il.build(c)
  params, model_state = setup.init(jax.random.PRNGKey(0))
  # All encoders start from one init; each head has its task's label space.
  chex.assert_trees_all_equal(params['round1/digits_a/encoder'], params['round1/digits_b/encoder'])
  assert params['round1/digits_a/head']['classifier']['kernel'].shape[-1] == 10
  assert params['round1/digits_b/head']['classifier']['kernel'].shape[-1] == 5
  state = core.init_state(setup.program, params, model_state)
  step = core.make_step(setup.program, method='first_order')
  state, metrics = step(state, setup.batches_at(0), jax.random.PRNGKey(1))
  assert {
    'round1/digits_b/interaction',
    'val/digits_a/loss',
    'val/digits_b/loss',
    'hypergrad/alphas/norm',
  } <= set(metrics)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics['hypergrad/alphas/norm']) > 0
  accuracies = setup.evaluate(state)
  assert set(accuracies) == {'round1/digits_a_accuracy', 'round1/digits_b_accuracy'}
  assert all(0.0 <= v <= 1.0 for v in accuracies.values())


def test_a_step_traces_each_distinct_network_once(monkeypatch):
  # Four stages and two validation losses over two networks (10 and 5 ways):
  # the learners' losses share one jitted apply per network, so Flax's
  # Python runs twice, not six times.
  c = il_darts.get_config('quick')
  c.net.layers, c.net.channels = 1, 4
  # A batch size no other test uses: JAX's trace cache outlives the jits.
  c.data.batch_size, c.data.eval_examples = 3, 6
  setup = il.build(c)
  params, model_state = setup.init(jax.random.PRNGKey(0))
  state = core.init_state(setup.program, params, model_state)
  traced_nets = []
  call = search_network.SearchNetwork.__call__

  def counting_call(net, *args, **kwargs):
    traced_nets.append(net.num_classes)
    return call(net, *args, **kwargs)

  monkeypatch.setattr(search_network.SearchNetwork, '__call__', counting_call)
  nas_search._shared_train_apply.cache_clear()  # no trace left by an earlier test
  core.make_step(setup.program, method='first_order').trace(
    state, setup.batches_at(0), jax.random.PRNGKey(1)
  )
  assert len(setup.program.stages) == 4
  assert sorted(traced_nets) == [5, 10]
