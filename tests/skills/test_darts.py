"""DARTS on the core: faithful second order, agreeing methods, no retrace,
config refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import darts as darts_config
from skillearn_jax import core
from skillearn_jax.nas import search_network
from skillearn_jax.run import compile_watch
from skillearn_jax import config_check
from skillearn_jax import skills
from skillearn_jax.skills import nas_search
from skillearn_jax.skills import darts


# The finite-difference hypergradient is exact only as epsilon -> 0: on this
# ReLU/max-pool supernet, in float64, its cosine to `exact` is 0.914 at
# DARTS' epsilon 0.01 and 1.0000 at 1e-4 (float32 cannot resolve 1e-4).
OFFICIAL_EPSILON = 0.01


@pytest.fixture(scope='module')
def tiny():
  c = darts_config.get_config('quick')
  c.net.layers, c.net.nodes, c.net.multiplier, c.net.channels = 2, 2, 2, 4
  net = nas_search.make_supernet(c, 5)
  program, schedule = darts.darts_program(net, c, steps_per_epoch=10)
  weights, alphas, stats = nas_search.init_supernet(net, jax.random.PRNGKey(0), (8, 8, 1))
  state = core.init_state(program, {'weights': weights, 'alphas': alphas}, {'batch_stats': stats})
  rng = np.random.default_rng(0)
  batch = lambda: {
    'image': rng.normal(size=(4, 8, 8, 1)).astype(np.float32),
    'label': rng.integers(0, 5, 4).astype(np.int32),
  }
  batches = {'train': batch(), 'val': batch()}
  # One real step so the momentum buffer the unroll reads is non-zero.
  step = core.make_step(program, method='first_order')
  state, _ = step(state, batches, jax.random.PRNGKey(1))
  return dict(
    config=c, net=net, program=program, schedule=schedule, state=state, batches=batches, step=step
  )


def _hypergrad(program, state, batches, method, epsilon, exact_mode='forward_over_reverse'):
  options = core.HypergradientOptions(fd_epsilon=epsilon, exact_mode=exact_mode)
  return jax.jit(
    lambda s: core.hypergradient(
      program,
      params=s.params,
      opt_states=s.opt_states,
      model_state=s.model_state,
      step=s.step,
      batches=batches,
      key=jax.random.PRNGKey(0),
      method=method,
      options=options,
    )[0]['alphas']
  )(state)


def _flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def _official_darts_second_order(net, c, schedule, state, batches, eps):
  """The official code's formula, written out: w' with momentum and wd,
  dalpha - eta * (dL_train(w+)/dalpha - dL_train(w-)/dalpha) / 2R."""
  stats = state.model_state['batch_stats']

  def ce(weights, alphas, batch):
    logits, _ = net.apply(
      {'params': weights, 'batch_stats': stats},
      batch['image'],
      alphas,
      train=True,
      mutable=['batch_stats'],
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()

  w, a = state.params['weights'], state.params['alphas']
  eta = schedule(state.step)
  mu, wd = c.weights_optim.momentum, c.weights_optim.weight_decay
  buf = optax.tree_utils.tree_get(state.opt_states['weights'], 'trace')
  g = jax.grad(ce)(w, a, batches['train'])
  w1 = jax.tree_util.tree_map(lambda p, m, gp: p - eta * (mu * m + gp + wd * p), w, buf, g)
  d_alpha, v = jax.grad(ce, argnums=(1, 0))(w1, a, batches['val'])
  r = eps / optax.global_norm(v)
  wp = jax.tree_util.tree_map(lambda p, x: p + r * x, w, v)
  wm = jax.tree_util.tree_map(lambda p, x: p - r * x, w, v)
  gp = jax.grad(ce, argnums=1)(wp, a, batches['train'])
  gm = jax.grad(ce, argnums=1)(wm, a, batches['train'])
  return jax.tree_util.tree_map(lambda d, p, m: d - eta * (p - m) / (2 * r), d_alpha, gp, gm)


# ~75 s of compiles on a host without AVX-512. In the default run the step's
# own official-formula test below covers it (DARTS steps go through the
# gradient loop), and tests/core/test_gradient_loop.py checks that the loop
# equals the generic finite difference on a tiny supernet (2 cells, 2 nodes,
# C = 4).
@pytest.mark.slow
def test_finite_difference_is_the_official_darts_second_order(tiny):
  t = tiny
  ours = _hypergrad(t['program'], t['state'], t['batches'], 'finite_difference', OFFICIAL_EPSILON)
  official = jax.jit(
    lambda s: _official_darts_second_order(
      t['net'], t['config'], t['schedule'], s, t['batches'], OFFICIAL_EPSILON
    )
  )(t['state'])
  np.testing.assert_allclose(_flat(ours), _flat(official), rtol=1e-3, atol=1e-6)


def test_finite_difference_step_moves_alphas_by_the_official_formula(tiny):
  # The step runs its gradients through one loop body (core.gradient_loop);
  # its alphas must take the architecture optimizer's step along the
  # official hypergradient all the same.
  t = tiny
  program, state = t['program'], t['state']
  assert core.gradient_loop.applies(program, method='finite_difference', order='validation_first')
  step = core.make_step(program, method='finite_difference')
  key = jax.random.PRNGKey(5)
  new, metrics = step(state, t['batches'], key)
  official = jax.jit(
    lambda s: _official_darts_second_order(
      t['net'], t['config'], t['schedule'], s, t['batches'], OFFICIAL_EPSILON
    )
  )(state)
  alphas_set = program.sets['alphas']
  updates, _ = alphas_set.optimizer.update(
    official, state.opt_states['alphas'], state.params['alphas']
  )
  expected = optax.apply_updates(state.params['alphas'], updates)
  np.testing.assert_allclose(_flat(new.params['alphas']), _flat(expected), rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(_flat(new.params['alphas']) - _flat(state.params['alphas'])).max()) > 1e-4
  # Adam's step hides the gradient's scale; its norm shows it.
  assert float(metrics['hypergrad/alphas/norm']) == pytest.approx(
    float(optax.global_norm(official)), rel=1e-3
  )


@pytest.mark.slow  # ~3 min of compiles; the core's chain tests and LPT's
# linear-testee test cover exact-vs-FD agreement in the default run.
def test_exact_and_finite_difference_agree_as_epsilon_shrinks(tiny):
  t = tiny
  to64 = lambda tree: jax.tree_util.tree_map(
    lambda x: (
      jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x
    ),
    tree,
  )
  with jax.enable_x64():
    state, batches = to64(t['state']), to64(t['batches'])
    exact = _flat(_hypergrad(t['program'], state, batches, 'exact', 0.01))
    fd = _flat(_hypergrad(t['program'], state, batches, 'finite_difference', 1e-4))
    cosine = float(exact @ fd / (jnp.linalg.norm(exact) * jnp.linalg.norm(fd)))
  assert cosine >= 0.999


def test_loss_second_derivative_forward_over_reverse_equals_reverse():
  """The exact hypergradient's mixed product d/dalpha <grad_w L, v>, taken
  forward over reverse (`exact_mode`'s default) through the loss's shared
  apply, the gated mixed ops, the remats and the convolutions, equals
  reverse over reverse. Three primitives keep the compile short; the full
  step's two modes are compared on the 8-primitive supernet below (slow)."""
  subset = ('skip_connect', 'sep_conv_3x3', 'max_pool_3x3')
  net = search_network.SearchNetwork(
    channels=4, num_classes=5, layers=1, nodes=2, multiplier=2, primitives=subset
  )
  # scaled up from the init's 1e-3 so the softmax is not uniform
  alphas = jax.tree_util.tree_map(
    lambda a: 300 * a,
    search_network.init_alphas(jax.random.PRNGKey(1), nodes=2, num_ops=len(subset)),
  )
  variables = jax.jit(
    lambda a: net.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)), a, train=False)
  )(alphas)
  weights, stats = variables['params'], variables['batch_stats']
  loss = nas_search.classification_loss(
    net, weights='weights', alphas='alphas', stats='batch_stats'
  )
  rng = np.random.default_rng(0)
  batch = {
    'image': rng.normal(size=(4, 8, 8, 1)).astype(np.float32),
    'label': rng.integers(0, 5, 4).astype(np.int32),
  }
  on = jnp.asarray(True)
  ctx = core.LossContext(
    jax.random.PRNGKey(1), {'batch_stats': stats}, jnp.asarray(0), {'weights': on, 'alphas': on}
  )
  objective = lambda w, a: loss({'weights': w, 'alphas': a}, batch, ctx).value
  v = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), weights)

  @jax.jit
  def both(w, a, v):
    forward = jax.jvp(lambda w: jax.grad(objective, argnums=(0, 1))(w, a), (w,), (v,))[1][1]
    reverse = jax.vjp(lambda a: jax.grad(objective)(w, a), a)[1](v)[0]
    return forward, reverse

  forward, reverse = (_flat(x) for x in both(weights, alphas, v))
  assert float(jnp.abs(reverse).max()) > 1e-3
  np.testing.assert_allclose(forward, reverse, rtol=1e-4, atol=1e-5 * float(jnp.abs(reverse).max()))


@pytest.mark.slow  # ~2 min of compiles; the test above, tests/nas/test_conv.py
# and the core's chain tests cover its pieces in the default run.
def test_exact_modes_agree_on_the_supernet(tiny):
  """Forward over reverse equals jax.grad through the unrolled step, to
  float rounding, on the full search space."""
  t = tiny
  forward, reverse = (
    _flat(_hypergrad(t['program'], t['state'], t['batches'], 'exact', OFFICIAL_EPSILON, mode))
    for mode in core.EXACT_MODES
  )
  assert float(jnp.linalg.norm(reverse)) > 1e-3
  np.testing.assert_allclose(forward, reverse, rtol=1e-4, atol=1e-5 * float(jnp.abs(reverse).max()))


def test_search_step_second_call_compiles_nothing(tiny):
  step, state, batches = tiny['step'], tiny['state'], tiny['batches']
  state, m1 = step(state, batches, jax.random.PRNGKey(2))
  state, m2 = step(state, batches, jax.random.PRNGKey(3))
  assert step._cache_size() == 1
  assert set(m1) >= {'train/loss', 'train/accuracy', 'val/loss', 'hypergrad/alphas/norm'}


def test_defaults_are_the_official_ones():
  c = darts_config.get_config('2nd')
  assert c.hypergradient == 'finite_difference'
  assert darts_config.get_config('1st').hypergradient == 'first_order'
  assert (
    c.weights_optim.lr,
    c.weights_optim.lr_min,
    c.weights_optim.momentum,
    c.weights_optim.weight_decay,
    c.weights_optim.clip,
  ) == (0.025, 0.001, 0.9, 3e-4, 5.0)
  assert (c.alphas_optim.lr, c.alphas_optim.b1, c.alphas_optim.b2, c.alphas_optim.weight_decay) == (
    3e-4,
    0.5,
    0.999,
    1e-3,
  )
  assert (c.data.batch_size, c.num_epochs, c.data.train_portion) == (64, 50, 0.5)
  assert (c.net.layers, c.net.channels, c.net.nodes) == (8, 16, 4)
  with pytest.raises(ValueError, match="unknown variant 'third'"):
    darts_config.get_config('third')


def test_weight_schedule_is_per_epoch_cosine(tiny):
  schedule = tiny['schedule']
  # 2 epochs of 10 steps (quick config): epoch 0 at 0.025, epoch 1 at the
  # cosine midpoint... of a 2-epoch schedule: lr_min + (lr-lr_min)/2.
  assert float(schedule(0)) == pytest.approx(0.025)
  assert float(schedule(9)) == pytest.approx(0.025)
  assert float(schedule(10)) == pytest.approx(0.001 + 0.024 * 0.5)


def test_equal_networks_share_one_jitted_apply():
  net = nas_search.make_supernet(darts_config.get_config('quick'), 10)
  twin = nas_search.make_supernet(darts_config.get_config('quick'), 10)
  other = nas_search.make_supernet(darts_config.get_config('quick'), 5)
  assert net is not twin and nas_search._train_apply(net) is nas_search._train_apply(twin)
  assert nas_search._train_apply(other) is not nas_search._train_apply(net)
  # A module with an unhashable field still gets a working apply, unshared.
  listed = search_network.SearchNetwork(
    channels=4,
    num_classes=10,
    layers=1,
    nodes=1,
    multiplier=1,
    primitives=['skip_connect', 'avg_pool_3x3'],
  )
  with pytest.raises(TypeError):
    hash(listed)
  alphas = search_network.init_alphas(jax.random.PRNGKey(1), nodes=1, num_ops=2)
  images = jnp.ones((2, 8, 8, 1))
  variables = listed.init(jax.random.PRNGKey(0), images, alphas, train=False)
  logits, _ = nas_search._train_apply(listed)(variables, images, alphas)
  assert logits.shape == (2, 10)


def test_every_epochs_evaluation_reuses_one_compiled_forward():
  c = darts_config.get_config('quick')
  c.net.layers, c.net.nodes, c.net.multiplier, c.net.channels = 1, 1, 1, 4
  c.data.eval_examples = 8
  setup = darts.build(c)
  params, model_state = setup.init(jax.random.PRNGKey(0))
  state = core.init_state(setup.program, params, model_state)
  first = setup.evaluate(state)['valid_accuracy']
  with compile_watch.CompileWatch() as watch:
    again = setup.evaluate(state)['valid_accuracy']
  report = watch.report()
  assert again == first
  assert (report.trace_s, report.xla_s) == (0.0, 0.0), report


@pytest.mark.parametrize(
  'field,value,message',
  [
    ('experiment', 'teach', r"config.experiment: 'teach' is not allowed; allowed: \('hpo_ridge'"),
    ('weights_optim.lr', 0.0, 'config.weights_optim.lr: 0.0 is not allowed'),
    ('weights_optim.lr_min', 0.5, 'must be <= config.weights_optim.lr'),
    ('weights_optim.momentum', 1.5, r'must lie in \[0, 1\)'),
    ('weights_optim.clip', -5.0, r'0 turns gradient clipping off'),
    ('alphas_optim.b1', 1.0, r'config.alphas_optim.b1: 1.0 .* \[0, 1\)'),
    ('alphas_optim.b2', -0.1, r'config.alphas_optim.b2'),
    ('alphas_optim.weight_decay', -1e-3, 'config.alphas_optim.weight_decay'),
  ],
)
def test_check_config_names_the_field(field, value, message):
  c = darts_config.get_config('quick')
  skills.check(c)
  target = c
  *path, last = field.split('.')
  for part in path:
    target = target[part]
  target[last] = value
  with pytest.raises(config_check.ConfigError, match=message):
    skills.check(c)
