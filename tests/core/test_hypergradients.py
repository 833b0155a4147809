"""Hypergradients against truth: closed forms, hand-composed chains, FD; the
two ways of computing exact ones against each other."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skillearn_jax import core
from skillearn_jax.core import hypergradient_methods
from skillearn_jax.skills import hpo_ridge

XI = 0.05


def _ridge_state(unroll_steps=1, log_lam=-1.0, w=None):
  program = hpo_ridge.build_program(xi=XI, weight_lr=0.1, hyper_lr=0.01, unroll_steps=unroll_steps)
  data = hpo_ridge.make_data(0, n_train=40, n_val=30, dim=5, noise=0.3)
  if w is None:
    w = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (5,))
  state = core.init_state(program, {'w': w, 'log_lam': jnp.float32(log_lam)})
  return program, state, data


def _hypergrad(program, state, data, method, **options):
  grads, metrics = jax.jit(
    lambda s: core.hypergradient(
      program,
      params=s.params,
      opt_states=s.opt_states,
      model_state=s.model_state,
      step=s.step,
      batches=data,
      key=jax.random.PRNGKey(0),
      method=method,
      options=core.HypergradientOptions(**options),
    )
  )(state)
  return grads, metrics


def _rel(a, b):
  return float(jnp.abs(a - b) / jnp.abs(b))


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_ridge_exact_matches_closed_form(exact_mode):
  program, state, data = _ridge_state()
  truth = hpo_ridge.closed_form_unrolled(state.params, data, XI)
  grads, metrics = _hypergrad(program, state, data, 'exact', exact_mode=exact_mode)
  assert _rel(grads['log_lam'], truth) < 1e-5
  assert float(metrics['hypergrad/log_lam/norm']) == pytest.approx(abs(float(truth)), rel=1e-5)


def test_ridge_finite_difference_matches_closed_form():
  program, state, data = _ridge_state()
  truth = hpo_ridge.closed_form_unrolled(state.params, data, XI)
  grads, _ = _hypergrad(program, state, data, 'finite_difference')
  assert _rel(grads['log_lam'], truth) < 1e-3


def test_ridge_first_order_drops_the_second_order_term():
  # L_val does not depend on h directly, so the first-order gradient is 0.
  program, state, data = _ridge_state()
  grads, _ = _hypergrad(program, state, data, 'first_order')
  assert float(grads['log_lam']) == 0.0


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_ridge_implicit_matches_ift_closed_form_at_the_optimum(exact_mode):
  h = -1.0
  data = hpo_ridge.make_data(0, n_train=40, n_val=30, dim=5, noise=0.3)
  w_star, _ = hpo_ridge.ridge_solution(jnp.float32(h), data['train'])
  program, state, data = _ridge_state(log_lam=h, w=w_star)
  truth = hpo_ridge.closed_form_implicit(jnp.float32(h), data)
  grads, _ = _hypergrad(
    program, state, data, 'implicit', neumann_steps=400, neumann_lr=0.2, exact_mode=exact_mode
  )
  assert _rel(grads['log_lam'], truth) < 1e-3


@pytest.mark.parametrize('steps', [2, 3])
def test_multi_step_unroll_fd_and_exact_agree(steps):
  program, state, data = _ridge_state(unroll_steps=steps)

  def by_hand(h):
    w = state.params['w']
    for _ in range(steps):
      w = w - XI * jax.grad(hpo_ridge.train_loss)({'w': w, 'log_lam': h}, data['train'], None)['w']
    return hpo_ridge.val_loss({'w': w}, data['val'], None)

  truth = jax.grad(by_hand)(state.params['log_lam'])
  for mode in core.EXACT_MODES:
    exact, _ = _hypergrad(program, state, data, 'exact', exact_mode=mode)
    assert _rel(exact['log_lam'], truth) < 1e-5, mode
  fd, _ = _hypergrad(program, state, data, 'finite_difference')
  assert _rel(fd['log_lam'], truth) < 1e-3


# A three-stage chain: stage 2 uses stage 1's solution, stage 3 uses both.
def _l1(p, batch, ctx):
  return jnp.sum((jnp.tanh(p['a'] * p['h1']) - batch) ** 2)


def _l2(p, batch, ctx):
  return jnp.sum((p['b'] - jnp.sin(p['a'])) ** 2 * (1 + p['h2'] ** 2)) + jnp.sum(p['b'] * batch)


def _i2(p, batch, ctx):
  return jnp.sum((p['b'] - p['a']) ** 2)


def _l3(p, batch, ctx):
  return jnp.sum((p['c'] - p['a'] * p['b']) ** 2) + jnp.sum(jnp.cos(p['c'] * p['h1']))


def _lval(p, batch, ctx):
  return jnp.sum((p['c'] - batch) ** 2) + 0.3 * jnp.sum(p['b'] * p['h2'])


def _chain_program(momentum=0.0, weight_decay=0.0, steps=1):
  sets = [
    core.ParamSet(
      n,
      optax.sgd(0.05, momentum=0.9 if momentum else None),
      unroll_lr=xi,
      unroll_momentum=momentum,
      unroll_weight_decay=weight_decay,
    )
    for n, xi in (('a', 0.1), ('b', 0.2), ('c', 0.15))
  ]
  sets += [core.ParamSet('h1', optax.adam(1e-2)), core.ParamSet('h2', optax.adam(1e-2))]
  return core.Program(
    param_sets=sets,
    stages=[
      core.Stage('s1', active=['a'], supporting=['h1'], loss=_l1, data='d1', unroll_steps=steps),
      core.Stage(
        's2',
        active=['b'],
        supporting=['h2'],
        uses=['s1'],
        loss=_l2,
        interaction=_i2,
        gamma=0.7,
        data='d2',
      ),
      core.Stage('s3', active=['c'], supporting=['h1'], uses=['s1', 's2'], loss=_l3, data='d3'),
    ],
    validation=core.Validation(_lval, {'h1': 'minimize', 'h2': 'maximize'}, uses=['s2', 's3']),
  )


def _chain_inputs():
  rng = np.random.default_rng(3)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  params = {'a': f(4), 'b': f(4), 'c': f(4), 'h1': f(4), 'h2': f(4)}
  batches = {'d1': f(4), 'd2': f(4), 'd3': f(4), 'val': f(4)}
  return params, batches


def _hand_composed(params, batches, h1, h2):
  grad = lambda fn, p, name: jax.grad(lambda x: fn({**p, name: x}, None, None))(p[name])
  a = params['a'] - 0.1 * jax.grad(lambda a: _l1({'a': a, 'h1': h1}, batches['d1'], None))(
    params['a']
  )
  b = params['b'] - 0.2 * jax.grad(
    lambda b: (
      _l2({'a': a, 'b': b, 'h2': h2}, batches['d2'], None) + 0.7 * _i2({'a': a, 'b': b}, None, None)
    )
  )(params['b'])
  c = params['c'] - 0.15 * jax.grad(
    lambda c: _l3({'a': a, 'b': b, 'c': c, 'h1': h1}, batches['d3'], None)
  )(params['c'])
  del grad
  return _lval({'b': b, 'c': c, 'h2': h2}, batches['val'], None)


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_three_stage_chain_exact_equals_hand_composed_grad(exact_mode):
  program = _chain_program()
  params, batches = _chain_inputs()
  state = core.init_state(program, params)
  grads, _ = _hypergrad(program, state, batches, 'exact', exact_mode=exact_mode)
  t1, t2 = jax.grad(_hand_composed, argnums=(2, 3))(params, batches, params['h1'], params['h2'])
  np.testing.assert_allclose(grads['h1'], t1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads['h2'], t2, rtol=1e-5, atol=1e-6)


def _cosine(a, b):
  a, b = jnp.ravel(a), jnp.ravel(b)
  return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


@pytest.mark.parametrize(
  'momentum, weight_decay, steps', [(0.0, 0.0, 1), (0.9, 3e-2, 1), (0.9, 3e-2, 2)]
)
def test_three_stage_chain_fd_matches_exact(momentum, weight_decay, steps):
  program = _chain_program(momentum, weight_decay, steps)
  params, batches = _chain_inputs()
  state = core.init_state(program, params)
  if momentum:  # a non-zero momentum buffer, as after some real steps
    step = core.make_step(program, method='first_order')
    state, _ = step(state, batches, jax.random.PRNGKey(0))
    state, _ = step(state, batches, jax.random.PRNGKey(1))
  exact, _ = _hypergrad(program, state, batches, 'exact')
  fd, _ = _hypergrad(program, state, batches, 'finite_difference')
  for n in ('h1', 'h2'):
    assert _cosine(fd[n], exact[n]) > 0.9999
    np.testing.assert_allclose(fd[n], exact[n], rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize('momentum, weight_decay, steps', [(0.9, 3e-2, 1), (0.9, 3e-2, 3)])
def test_three_stage_chain_exact_modes_agree(momentum, weight_decay, steps):
  """The forward-over-reverse sweep equals jax.grad through the unrolled
  steps, momentum buffer, weight decay, interaction and chains included."""
  program = _chain_program(momentum, weight_decay, steps)
  params, batches = _chain_inputs()
  state = core.init_state(program, params)
  step = core.make_step(program, method='first_order')
  state, _ = step(state, batches, jax.random.PRNGKey(0))
  state, _ = step(state, batches, jax.random.PRNGKey(1))
  forward, _ = _hypergrad(program, state, batches, 'exact', exact_mode='forward_over_reverse')
  reverse, _ = _hypergrad(program, state, batches, 'exact', exact_mode='reverse_over_reverse')
  for n in ('h1', 'h2'):
    np.testing.assert_allclose(forward[n], reverse[n], rtol=2e-5, atol=1e-6)


def test_unknown_exact_mode_is_refused():
  with pytest.raises(
    ValueError,
    match="exact_mode: 'sideways' is not allowed; "
    r"allowed: \('forward_over_reverse'",
  ):
    core.HypergradientOptions(exact_mode='sideways')


def _spd(rng, n):
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  return jnp.asarray(q @ np.diag(rng.uniform(0.5, 2.0, n)) @ q.T, jnp.float32)


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_two_stage_chain_implicit_matches_ift_at_the_optima(exact_mode):
  # a* = P^-1 h1, b* = Q^-1 (a* + h2), L_val = |b* - t|^2 / 2: the true
  # hypergradient of the chained optima is known through linear solves.
  rng = np.random.default_rng(5)
  pm, qm = _spd(rng, 3), _spd(rng, 3)
  h1, h2, t = (jnp.asarray(rng.normal(size=3), jnp.float32) for _ in range(3))
  l1 = lambda p, b, c: 0.5 * p['a'] @ pm @ p['a'] - p['a'] @ p['h1']
  l2 = lambda p, b, c: 0.5 * p['b'] @ qm @ p['b'] - p['b'] @ (p['a'] + p['h2'])
  lval = lambda p, b, c: 0.5 * jnp.sum((p['b'] - t) ** 2)
  program = core.Program(
    param_sets=[
      core.ParamSet('a', optax.sgd(0.1), unroll_lr=0.3),
      core.ParamSet('b', optax.sgd(0.1), unroll_lr=0.3),
      core.ParamSet('h1', optax.sgd(0.1)),
      core.ParamSet('h2', optax.sgd(0.1)),
    ],
    stages=[
      core.Stage('s1', active=['a'], supporting=['h1'], loss=l1),
      core.Stage('s2', active=['b'], supporting=['h2'], uses=['s1'], loss=l2),
    ],
    validation=core.Validation(lval, {'h1': 'minimize', 'h2': 'minimize'}, uses=['s2']),
  )

  def optima(h1, h2):
    a = jnp.linalg.solve(pm, h1)
    return a, jnp.linalg.solve(qm, a + h2)

  truth = jax.grad(lambda h1, h2: 0.5 * jnp.sum((optima(h1, h2)[1] - t) ** 2), argnums=(0, 1))(
    h1, h2
  )
  a, b = optima(h1, h2)
  state = core.init_state(program, {'a': a, 'b': b, 'h1': h1, 'h2': h2})
  grads, _ = _hypergrad(
    program,
    state,
    {'s1': None, 's2': None, 'val': None},
    'implicit',
    neumann_steps=300,
    exact_mode=exact_mode,
  )
  np.testing.assert_allclose(grads['h1'], truth[0], rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(grads['h2'], truth[1], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_implicit_counts_the_unroll_weight_decay_in_the_hessian(exact_mode):
  # The unroll rule's weight decay wd is part of the stage objective:
  # a* = (P + wd I)^-1 h, so the true hypergradient solves with P + wd I.
  rng = np.random.default_rng(7)
  pm, wd = _spd(rng, 3), 0.5
  h, t = (jnp.asarray(rng.normal(size=3), jnp.float32) for _ in range(2))
  loss = lambda p, b, c: 0.5 * p['a'] @ pm @ p['a'] - p['a'] @ p['h']
  program = core.Program(
    param_sets=[
      core.ParamSet('a', optax.sgd(0.1), unroll_lr=0.3, unroll_weight_decay=wd),
      core.ParamSet('h', optax.sgd(0.1)),
    ],
    stages=[core.Stage('s', active=['a'], supporting=['h'], loss=loss)],
    validation=core.Validation(
      lambda p, b, c: 0.5 * jnp.sum((p['a'] - t) ** 2), {'h': 'minimize'}, uses=['s']
    ),
  )
  optimum = lambda h: jnp.linalg.solve(pm + wd * jnp.eye(3), h)
  truth = jax.grad(lambda h: 0.5 * jnp.sum((optimum(h) - t) ** 2))(h)
  state = core.init_state(program, {'a': optimum(h), 'h': h})
  grads, _ = _hypergrad(
    program, state, {'s': None, 'val': None}, 'implicit', neumann_steps=300, exact_mode=exact_mode
  )
  np.testing.assert_allclose(grads['h'], truth, rtol=1e-3, atol=1e-5)
  # By the IFT the answer is H^-1 (a* - t); H = P alone is far off.
  without_decay = jnp.linalg.solve(pm, optimum(h) - t)
  assert float(jnp.max(jnp.abs(without_decay - truth))) > 1e-2


def test_unknown_method_is_refused():
  program, state, data = _ridge_state()
  with pytest.raises(ValueError, match="hypergradient: unknown method 'magic'"):
    core.hypergradient(
      program,
      params=state.params,
      opt_states=state.opt_states,
      model_state={},
      step=state.step,
      batches=data,
      key=jax.random.PRNGKey(0),
      method='magic',
    )


# -- implicit_cg: the implicit function theorem solved by conjugate gradients.


def _ridge_at_the_optimum(h=-1.0):
  data = hpo_ridge.make_data(0, n_train=40, n_val=30, dim=5, noise=0.3)
  w_star, _ = hpo_ridge.ridge_solution(jnp.float32(h), data['train'])
  program, state, data = _ridge_state(log_lam=h, w=w_star)
  return program, state, data, hpo_ridge.closed_form_implicit(jnp.float32(h), data)


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_ridge_implicit_cg_matches_ift_closed_form_at_the_optimum(exact_mode):
  program, state, data, truth = _ridge_at_the_optimum()
  # dim 5: CG solves the 5 x 5 system in 5 steps in exact arithmetic.
  grads, _ = _hypergrad(program, state, data, 'implicit_cg', cg_steps=5, exact_mode=exact_mode)
  assert _rel(grads['log_lam'], truth) < 1e-4
  # One CG step is a steepest-descent step: far off, so the above is CG's work.
  one_step, _ = _hypergrad(program, state, data, 'implicit_cg', cg_steps=1, exact_mode=exact_mode)
  assert _rel(one_step['log_lam'], truth) > 1e-2


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_implicit_cg_counts_the_unroll_weight_decay_in_the_hessian(exact_mode):
  # As the implicit test above: a* = (P + wd I)^-1 h, L_val = |a* - t|^2 / 2.
  rng = np.random.default_rng(7)
  pm, wd = _spd(rng, 3), 0.5
  h, t = (jnp.asarray(rng.normal(size=3), jnp.float32) for _ in range(2))
  loss = lambda p, b, c: 0.5 * p['a'] @ pm @ p['a'] - p['a'] @ p['h']
  program = core.Program(
    param_sets=[
      core.ParamSet('a', optax.sgd(0.1), unroll_lr=0.3, unroll_weight_decay=wd),
      core.ParamSet('h', optax.sgd(0.1)),
    ],
    stages=[core.Stage('s', active=['a'], supporting=['h'], loss=loss)],
    validation=core.Validation(
      lambda p, b, c: 0.5 * jnp.sum((p['a'] - t) ** 2), {'h': 'minimize'}, uses=['s']
    ),
  )
  optimum = lambda h: jnp.linalg.solve(pm + wd * jnp.eye(3), h)
  truth = jax.grad(lambda h: 0.5 * jnp.sum((optimum(h) - t) ** 2))(h)
  state = core.init_state(program, {'a': optimum(h), 'h': h})
  grads, _ = _hypergrad(
    program, state, {'s': None, 'val': None}, 'implicit_cg', cg_steps=3, exact_mode=exact_mode
  )
  np.testing.assert_allclose(grads['h'], truth, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('exact_mode', core.EXACT_MODES)
def test_implicit_cg_and_implicit_agree_on_a_chain_at_the_optima(exact_mode):
  # Two chained quadratic stages at their optima, where both solve the same
  # systems: CG in 3 steps, the Neumann series in 300.
  rng = np.random.default_rng(5)
  pm, qm = _spd(rng, 3), _spd(rng, 3)
  h1, h2, t = (jnp.asarray(rng.normal(size=3), jnp.float32) for _ in range(3))
  l1 = lambda p, b, c: 0.5 * p['a'] @ pm @ p['a'] - p['a'] @ p['h1']
  l2 = lambda p, b, c: 0.5 * p['b'] @ qm @ p['b'] - p['b'] @ (p['a'] + p['h2'])
  program = core.Program(
    param_sets=[
      core.ParamSet('a', optax.sgd(0.1), unroll_lr=0.3),
      core.ParamSet('b', optax.sgd(0.1), unroll_lr=0.3),
      core.ParamSet('h1', optax.sgd(0.1)),
      core.ParamSet('h2', optax.sgd(0.1)),
    ],
    stages=[
      core.Stage('s1', active=['a'], supporting=['h1'], loss=l1),
      core.Stage('s2', active=['b'], supporting=['h2'], uses=['s1'], loss=l2),
    ],
    validation=core.Validation(
      lambda p, b, c: 0.5 * jnp.sum((p['b'] - t) ** 2),
      {'h1': 'minimize', 'h2': 'minimize'},
      uses=['s2'],
    ),
  )
  a = jnp.linalg.solve(pm, h1)
  state = core.init_state(program, {'a': a, 'b': jnp.linalg.solve(qm, a + h2), 'h1': h1, 'h2': h2})
  batches = {'s1': None, 's2': None, 'val': None}
  cg, _ = _hypergrad(program, state, batches, 'implicit_cg', cg_steps=3, exact_mode=exact_mode)
  neumann, _ = _hypergrad(
    program, state, batches, 'implicit', neumann_steps=300, exact_mode=exact_mode
  )
  for n in ('h1', 'h2'):
    np.testing.assert_allclose(cg[n], neumann[n], rtol=1e-3, atol=1e-5)


def test_the_registry_names_the_core_methods():
  assert tuple(hypergradient_methods.REGISTRY) == core.METHODS
  assert core.METHODS == (
    'exact',
    'finite_difference',
    'first_order',
    'implicit',
    'implicit_cg',
  )


def test_lookup_refuses_an_unknown_method_naming_the_allowed_ones():
  with pytest.raises(
    ValueError,
    match=r"hypergradient: unknown method 'magic'; allowed: \('exact', 'finite_difference', "
    r"'first_order', 'implicit', 'implicit_cg'\)",
  ):
    hypergradient_methods.lookup('magic')
  assert (
    hypergradient_methods.lookup('implicit_cg') is hypergradient_methods.REGISTRY['implicit_cg']
  )


def test_make_step_refuses_an_unknown_method_through_the_lookup():
  program, _, _ = _ridge_state()
  with pytest.raises(ValueError, match="hypergradient: unknown method 'magic'; allowed: "):
    core.make_step(program, method='magic')


@pytest.mark.parametrize('neumann_lr', [None, 1.5])
def test_neumann_contraction_is_the_spectral_radius_of_i_minus_eta_h(neumann_lr):
  # Ridge's stage Hessian is A = X^T X / n + e^h I whatever w is, so the
  # radius is max_i |1 - eta a_i| over A's eigenvalues a_i: below 1 at
  # eta = XI, above 1 at eta = 1.5 (the series then diverges).
  program, state, data = _ridge_state()
  options = core.HypergradientOptions(neumann_lr=neumann_lr)
  at = lambda s: dict(
    params=s.params, opt_states=s.opt_states, model_state=s.model_state, step=s.step
  )
  out = jax.jit(
    lambda s: core.hypergradients.neumann_contraction(
      program, options=options, iterations=200, batches=data, key=jax.random.PRNGKey(0), **at(s)
    )
  )(state)['train']
  _, a = hpo_ridge.ridge_solution(jnp.float32(-1.0), data['train'])
  eigenvalues = np.linalg.eigvalsh(np.asarray(a, np.float64))
  eta = XI if neumann_lr is None else neumann_lr
  radius = np.max(np.abs(1 - eta * eigenvalues))
  dominant = eigenvalues[np.argmax(np.abs(1 - eta * eigenvalues))]
  assert float(out['radius']) == pytest.approx(radius, rel=1e-3)
  assert float(out['curvature']) == pytest.approx(dominant, rel=1e-3)
  assert (float(out['radius']) >= 1) == (neumann_lr == 1.5)


def test_ridge_exact_matches_the_t_step_closed_form():
  program, state, data = _ridge_state(unroll_steps=3)
  truth = hpo_ridge.closed_form_unrolled(state.params, data, XI, steps=3)
  one_step = hpo_ridge.closed_form_unrolled(state.params, data, XI)
  grads, _ = _hypergrad(program, state, data, 'exact')
  assert _rel(grads['log_lam'], truth) < 1e-4
  assert _rel(one_step, truth) > 0.1  # the recursion matters
