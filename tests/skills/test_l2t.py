"""Learning to Teach's math against truth: the reward, REINFORCE on a bandit against the
analytic policy gradient, the baseline, the features, fill-to-M batching, episodes."""

import itertools
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skillearn_jax.skills import l2t
from skillearn_jax.skills import l2t_students
from tests.conftest import on_host_devices


def test_reward_is_minus_log_of_the_fraction_of_the_cap():
  np.testing.assert_allclose(l2t.reward(50, 200), -np.log(0.25), rtol=1e-6)
  assert float(l2t.reward(200, 200)) == 0.0  # never reached: i_tau = T'
  assert float(l2t.reward(10, 200)) > float(l2t.reward(20, 200)) > 0.0


# -- a bandit: K candidates with fixed features, reward a function of the keep pattern ---------
K, D = 3, 4
F = np.random.default_rng(0).normal(size=(K, D))
W = np.array([1.0, -2.0, 0.5])


def bandit_reward(actions):
  a = jnp.asarray(actions, jnp.float64)
  return 5.0 + a @ W + 3.0 * a[0] * a[1]  # the offset is what a baseline removes


def _patterns():
  return [np.array(p, bool) for p in itertools.product([0, 1], repeat=K)]


def _theta(key):
  theta = l2t.init_teacher(key, D, hidden=5, keep_bias=0.3)
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), theta)


def _expected_reward(theta):
  p = jax.nn.sigmoid(l2t.keep_logit(theta, jnp.asarray(F)))
  total = 0.0
  for a in _patterns():
    prob = jnp.prod(jnp.where(a, p, 1 - p))
    total = total + prob * bandit_reward(a)
  return total


def _exact_score_estimate(theta, baseline):
  """E_a[(R(a) − b) ∇ log π(a)] summed over all 2^K patterns: the estimator's mean."""
  p = jax.nn.sigmoid(l2t.keep_logit(theta, jnp.asarray(F)))
  mask = jnp.ones((K,), bool)
  out = jax.tree_util.tree_map(jnp.zeros_like, theta)
  for a in _patterns():
    prob = jnp.prod(jnp.where(a, p, 1 - p))
    score = jax.grad(l2t.log_prob)(theta, jnp.asarray(F), jnp.asarray(a), mask)
    out = jax.tree_util.tree_map(
      lambda o, s: o + prob * (bandit_reward(a) - baseline) * s, out, score
    )
  return out


def test_score_function_mean_equals_the_analytic_policy_gradient_with_any_baseline():
  with jax.enable_x64():
    theta = _theta(jax.random.key(1))
    analytic = jax.grad(_expected_reward)(theta)
    for baseline in (0.0, 1.7):
      estimate = _exact_score_estimate(theta, baseline)
      for name in theta:
        np.testing.assert_allclose(estimate[name], analytic[name], rtol=1e-9, atol=1e-12)


def test_reinforce_gradient_monte_carlo_matches_the_analytic_gradient():
  """Sampled episodes through `reinforce_gradient` (minus the ascent direction): within a few
  standard errors of the analytic ∇ E[R], and the baseline lowers the variance."""
  with jax.enable_x64():
    theta = _theta(jax.random.key(2))
    analytic = jax.grad(_expected_reward)(theta)
    n = 20000
    p = jax.nn.sigmoid(l2t.keep_logit(theta, jnp.asarray(F)))
    actions = jax.random.uniform(jax.random.key(3), (n, K)) < p
    rewards = jax.vmap(bandit_reward)(actions)
    mask = jnp.ones((K,), bool)
    scores = jax.vmap(lambda a: jax.grad(l2t.log_prob)(theta, jnp.asarray(F), a, mask))(actions)
    spreads = []
    for baseline in (0.0, float(jnp.mean(rewards))):
      grad = l2t.reinforce_gradient(scores, rewards, baseline)
      flat_scores = jnp.concatenate(
        [s.reshape(n, -1) for s in jax.tree_util.tree_leaves(scores)], 1
      )
      per_episode = (rewards - baseline)[:, None] * flat_scores
      stderr = jnp.std(per_episode, 0) / np.sqrt(n)
      estimate = -jnp.concatenate([g.reshape(-1) for g in jax.tree_util.tree_leaves(grad)])
      truth = jnp.concatenate([g.reshape(-1) for g in jax.tree_util.tree_leaves(analytic)])
      assert np.all(np.abs(estimate - truth) <= 4.5 * stderr + 1e-9), (estimate, truth)
      spreads.append(float(jnp.sum(stderr)))
    assert spreads[1] < 0.5 * spreads[0]  # the mean-reward baseline lowers the variance


def test_reinforce_gradient_subtracts_the_baseline_and_averages_episodes():
  scores = {'w': jnp.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]])}
  rewards = jnp.array([1.0, 0.0, 2.0])
  grad = l2t.reinforce_gradient(scores, rewards, 1.0)
  expected = -((0.0 * scores['w'][0]) + (-1.0 * scores['w'][1]) + (1.0 * scores['w'][2])) / 3
  np.testing.assert_allclose(grad['w'], expected, rtol=1e-6)


def test_baseline_is_the_first_mean_then_a_moving_average():
  used, nxt = l2t.baseline_update(0.0, 0, jnp.array([1.0, 3.0]), 0.8)
  assert float(used) == 2.0 and float(nxt) == 2.0  # first batch: its own mean
  used, nxt = l2t.baseline_update(nxt, 1, jnp.array([7.0]), 0.8)
  assert float(used) == 2.0  # later batches subtract the average of the earlier ones
  np.testing.assert_allclose(nxt, 0.8 * 2.0 + 0.2 * 7.0, rtol=1e-6)


def test_features_are_normalised_and_hold_the_margin():
  onehot = jax.nn.one_hot(jnp.array([0, 2]), 3)
  probs = jnp.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
  scale = float(np.log(3))
  feats = l2t.features(onehot, probs, jnp.array([0.25, 2.0, -1.0]), scale)
  assert feats.shape == (2, l2t.feature_dim(3)) == (2, 11)
  np.testing.assert_allclose(feats[:, :3], onehot)
  np.testing.assert_allclose(feats[:, 3:6], [[0.25, 1.0, 0.0]] * 2)  # clipped to [0, 1]
  np.testing.assert_allclose(feats[:, 6:9], probs)
  np.testing.assert_allclose(feats[:, 9], [-np.log(0.7) / scale, 1.0], rtol=1e-6)  # 2.30/1.10
  np.testing.assert_allclose(feats[:, 10], [0.7 - 0.2, 0.1 - 0.5], rtol=1e-6)


def test_teacher_keeps_nearly_everything_at_init():
  theta = l2t.init_teacher(jax.random.key(0), 25, 12, keep_bias=2.0)
  feats = jax.random.uniform(jax.random.key(1), (100, 25))
  p = jax.nn.sigmoid(l2t.keep_logit(theta, feats))
  assert float(jnp.min(p)) > 0.8 and abs(float(jnp.mean(p)) - jax.nn.sigmoid(2.0)) < 0.03


def test_fill_to_batch_takes_the_first_m_kept_and_considers_up_to_the_mth():
  keep = jnp.array([1, 0, 1, 1, 0, 1], bool)
  selected, considered = l2t.fill_to_batch(keep, 2)
  np.testing.assert_array_equal(selected, [1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(considered, [1, 1, 1, 0, 0, 0])
  selected, considered = l2t.fill_to_batch(jnp.array([0, 1, 0, 0], bool), 2)
  np.testing.assert_array_equal(selected, [0, 1, 0, 0])  # short pool: trains on what it kept
  np.testing.assert_array_equal(considered, [1, 1, 1, 1])


def test_self_paced_keeps_the_easiest_fraction_rising_to_all():
  losses = jnp.array([0.5, 2.0, 0.1, 1.0])
  np.testing.assert_array_equal(l2t.spl_keep(losses, 0.5), [1, 0, 1, 0])
  assert float(l2t.spl_fraction(0, 100, 0.5, 0.5)) == 0.5
  assert float(l2t.spl_fraction(25, 100, 0.5, 0.5)) == 0.75
  assert float(l2t.spl_fraction(90, 100, 0.5, 0.5)) == 1.0


# -- episodes on a tiny separable problem ---------------------------------------------------
def _tiny(tau=0.9, method_horizon=40):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 2, 2, 1)).astype(np.float32)
  y = (x[:, 0, 0, 0] > 0).astype(np.int32)
  task = l2t.Task(
    jnp.asarray(x[:48]), jnp.asarray(y[:48]), jnp.asarray(x[48:]), jnp.asarray(y[48:])
  )
  block = type('B', (), dict(arch='mlp', hidden=(8,), optimizer='sgd', lr=0.5, momentum=0.0))
  model, optimizer = l2t_students.make_student(block, 2)
  s = l2t.Settings(2, 4, 8, method_horizon, tau, 5, float(np.log(2)), True, 0.5, 0.5, 0.3, 8)
  theta = l2t.init_teacher(jax.random.key(0), l2t.feature_dim(2))
  return model, optimizer, s, task, theta


def test_parallel_episodes_equal_one_at_a_time_and_repeat_exactly():
  model, optimizer, s, task, theta = _tiny()
  keys = jax.random.split(jax.random.key(5), 3)
  rewards, scores, stats = l2t.parallel_episodes(model, optimizer, s, task, theta, keys)
  again = l2t.parallel_episodes(model, optimizer, s, task, theta, keys)
  np.testing.assert_array_equal(rewards, again[0])
  single = jax.jit(lambda k: l2t.episode(model, optimizer, s, task, theta, k))
  for i, k in enumerate(keys):
    r, score, _ = single(k)
    np.testing.assert_allclose(r, rewards[i], rtol=1e-5)
    np.testing.assert_allclose(score['w1'], scores['w1'][i], rtol=1e-4, atol=1e-6)
  assert float(jnp.max(stats['reached'])) == 1.0  # the tiny problem is learnable
  reached = stats['reached'] > 0
  np.testing.assert_allclose(
    rewards[reached], -jnp.log(stats['i_tau'][reached] / s.horizon), rtol=1e-6
  )
  assert np.all(stats['i_tau'] % s.check_every == 0)
  assert 0.0 < float(jnp.mean(stats['drop_ratio'])) < 0.5  # keep bias 2: ~12 % dropped


def test_episodes_from_rbg_keys_are_those_of_their_own_keys_under_vmap():
  """Under vmap JAX draws rbg bits for the whole batch from its first key, so a done first
  episode (its step frozen) would make every other one redraw the same pools; episodes
  re-key to threefry, and vmapped episodes stay those of their own keys."""
  model, optimizer, s, task, theta = _tiny()
  keys = jax.random.split(jax.random.key(5, impl='rbg'), 3)
  _, scores, stats = l2t.parallel_episodes(model, optimizer, s, task, theta, keys)
  single = jax.jit(lambda k: l2t.episode(model, optimizer, s, task, theta, k))
  for i, k in enumerate(keys):
    _, score, alone = single(k)
    assert float(alone['i_tau']) == float(stats['i_tau'][i])
    np.testing.assert_allclose(score['w1'], scores['w1'][i], rtol=1e-4, atol=1e-6)


def test_a_block_draws_what_its_steps_would_draw_one_by_one():
  """run_checks draws a block's pools and uniforms in one vmapped call: the student it
  returns is the one of steps that each draw their own from fold_in(key, t) (the same pools
  and decisions; parameters to rounding, compiled against op by op)."""
  model, optimizer, s, task, theta = _tiny(tau=1.1, method_horizon=10)
  k_init, k_run = jax.random.split(jax.random.key(4))
  start = l2t.init_student(model, optimizer, s, task.train_x, theta, k_init)
  for method in (0, 2, 3):  # teacher, self-paced, random drops: each reads the draws
    blocks = jax.jit(
      lambda st, m=method: l2t.run_checks(model, optimizer, s, task, theta, m, k_run, st, 0, 2)
    )(start)
    st = start
    for t in range(2 * s.check_every):
      st = l2t.student_step(model, optimizer, s, task, theta, method, k_run, st, t)
      if (t + 1) % s.check_every == 0:
        st = l2t._check(model, s, task, t, st)
    for got, want in zip(jax.tree_util.tree_leaves(blocks), jax.tree_util.tree_leaves(st)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # jit vs op by op: rounding
    for field in ('used', 'considered', 'dropped'):  # counts of the drawn pools' decisions
      assert float(getattr(blocks, field)) == float(getattr(st, field))
    assert float(st.used) > 0


TWO_DEVICES = textwrap.dedent('''
    import json
    import jax, numpy as np
    from jax.sharding import Mesh
    from tests.skills.test_l2t import _tiny
    from skillearn_jax.skills import l2t
    model, optimizer, s, task, theta = _tiny()
    keys = jax.random.split(jax.random.key(5), 4)
    mesh = Mesh(np.asarray(jax.devices()), ('data',))
    run = lambda m: jax.jit(lambda k: l2t.parallel_episodes(model, optimizer, s, task, theta, k, m))
    one, two = run(None)(keys), run(mesh)(keys)
    print('RESULT ' + json.dumps({'devices': jax.device_count(),
                                  'split': str(two[0].sharding.spec),
                                  'rewards': [np.asarray(one[0]).tolist(), np.asarray(two[0]).tolist()],
                                  'w1': float(np.max(np.abs(one[1]['w1'] - two[1]['w1'])))}))
''')


def test_episodes_split_over_two_host_devices_equal_one_device():
  """Two CPU host devices each run half the episodes (shard_map over the mesh): the same
  rewards and scores as all of them vmapped on one device."""
  got = on_host_devices(TWO_DEVICES)
  assert got['devices'] == 2 and 'data' in got['split']
  np.testing.assert_allclose(got['rewards'][0], got['rewards'][1], rtol=1e-6)
  assert got['w1'] < 1e-5


def test_episode_score_is_the_gradient_of_the_log_probability_of_its_decisions():
  """Rerun an episode's decisions with the teacher's parameters as a variable: the score the
  scan accumulated equals ∇θ of the summed log φθ(a_t | s_t) over the steps before τ."""
  model, optimizer, s, task, theta = _tiny(tau=1.1, method_horizon=10)  # never reached
  key = jax.random.key(9)
  _, score, _ = l2t.episode(model, optimizer, s, task, theta, key)

  def total_log_prob(th):
    k_init, k_run = jax.random.split(l2t.threefry_key(key))
    st = l2t.init_student(model, optimizer, s, task.train_x, theta, k_init)
    total = 0.0
    for t in range(s.horizon):
      # the student's trajectory does not depend on th given the actions: replay them.
      k_pool, k_act = jax.random.split(jax.random.fold_in(k_run, t))
      idx = jax.random.randint(k_pool, (s.pool_size,), 0, task.train_y.shape[0])
      x, y = task.train_x[idx], task.train_y[idx]
      probs = jax.nn.softmax(model.apply(st.params, x))
      steps = max(t, 1)
      mf = jnp.stack(
        [t / s.horizon, st.loss_sum / steps / s.loss_scale, st.best_val / s.loss_scale]
      )
      feats = l2t.features(jax.nn.one_hot(y, 2), probs, mf, s.loss_scale)
      keep = jax.random.uniform(k_act, (s.pool_size,)) < jax.nn.sigmoid(
        l2t.keep_logit(theta, feats)
      )
      _, considered = l2t.fill_to_batch(keep, s.batch_size)
      total = total + l2t.log_prob(th, feats, keep, considered)
      st = l2t.student_step(model, optimizer, s, task, theta, 0, k_run, st, t)
      if (t + 1) % s.check_every == 0:
        st = l2t._check(model, s, task, t, st)
    return total

  expected = jax.grad(total_log_prob)(theta)
  for name in theta:
    np.testing.assert_allclose(score[name], expected[name], rtol=2e-4, atol=2e-5)


def test_teacher_update_sets_the_first_baseline_to_the_mean_reward():
  model, optimizer, s, task, theta = _tiny()
  opt = optax.adam(1e-2)
  state = l2t.TeacherState(
    step=jnp.zeros((), jnp.int32),
    theta=theta,
    opt_state=opt.init(theta),
    baseline=jnp.zeros(()),
    baseline_count=jnp.zeros((), jnp.int32),
  )
  keys = jax.random.split(jax.random.key(0), 4)
  new, metrics = jax.jit(
    lambda st, k: l2t.teacher_update(model, optimizer, s, task, opt, 0.8, st, k)
  )(state, keys)
  assert int(new.step) == 1 and int(new.baseline_count) == 1
  np.testing.assert_allclose(new.baseline, metrics['teacher/reward'], rtol=1e-6)
  assert np.isfinite(float(metrics['teacher/grad_norm']))


@pytest.mark.parametrize('arch,depth', [('mlp', 0), ('cnn', 0), ('resnet', 8)])
def test_students_give_class_logits(arch, depth):
  block = type(
    'B', (), dict(arch=arch, hidden=(16,), depth=depth, optimizer='momentum', lr=0.1, momentum=0.9)
  )
  model, optimizer = l2t_students.make_student(block, 10)
  x = jnp.zeros((2, 8, 8, 3))
  params = model.init(jax.random.key(0), x)
  assert model.apply(params, x).shape == (2, 10)
  optimizer.init(params)


def test_threefry_key_is_the_same_vmapped_or_not_and_differs_by_key():
  keys = jax.random.split(jax.random.key(3, impl='rbg'), 3)
  batched = jax.random.key_data(jax.vmap(l2t.threefry_key)(keys))
  for i, k in enumerate(keys):
    np.testing.assert_array_equal(batched[i], jax.random.key_data(l2t.threefry_key(k)))
  assert len({tuple(np.asarray(b).tolist()) for b in batched}) == 3
  assert batched.shape == (3, 2)  # threefry2x32 key data
