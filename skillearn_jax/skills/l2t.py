"""Learning to Teach (Fan et al., ICLR 2018): the pure math of teaching episodes.

This module owns what a teacher and its students compute, as pure functions over pytrees:
- the teacher's per-example state `features` (label one-hot; iteration, average historical
  training loss and best validation loss, each normalised to [0, 1]; the student's predicted
  probabilities, −log p_y normalised, and the margin p_y − max_{y'≠y} p_{y'}) and its policy
  fc(d → 12) → tanh → fc(12 → 1) → sigmoid, the keep probability (`keep_logit`);
- the keep rules of the four methods (`METHODS`): the teacher's Bernoulli draws (L2T), keep
  everything (NoTeach), the easiest fraction of the pool by loss, raised linearly over time
  (Self-Paced Learning), and random drops at a fixed ratio (RandTeach);
- fill-to-M batching (`fill_to_batch`): each student step draws a fixed pool of K = M ·
  pool_factor candidates; the kept ones, in pool order, fill the minibatch until it holds M;
  candidates after the M-th kept one are never looked at (not "considered"). A pool with fewer
  than M kept trains on what it kept (pool_factor = 1: the teacher thins each batch);
- one student step (`student_step`), blocks of `check_every` steps each a `lax.scan` ended by
  the held-out check (`run_checks`), and a whole episode (`episode`): blocks until the
  student reaches τ or T′ steps;
- students on several devices (`over_devices`): vmapped students split over a mesh, each
  device vmapping its share;
- the terminal reward −log(i_τ / T′) (`reward`), and REINFORCE with a moving-average baseline
  (`reinforce_gradient`, `baseline_update`): the teacher's gradient is the score function
  Σ_t ∇θ log φθ(a_t | s_t) of each episode, accumulated inside the scan, times the episode's
  advantage R − b, averaged over the episodes run in parallel under `vmap`.
The experiment wiring (data halves, stages, plots) is `skills.l2t_run`'s.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

PyTree = Any
METHODS = ('l2t', 'noteach', 'spl', 'randteach')
MODEL_FEATURES = 3  # iteration, average training loss, best validation loss


def feature_dim(num_classes: int) -> int:
  """One-hot label, the model features, probabilities, −log p_y and margin: 2C + 5."""
  return 2 * num_classes + MODEL_FEATURES + 2


# -- the teacher ------------------------------------------------------------------------------
def init_teacher(key, dim: int, hidden: int = 12, keep_bias: float = 2.0) -> dict:
  """Policy parameters; the output bias `keep_bias` makes the first keep probabilities about
  sigmoid(keep_bias) (0.88 for 2) whatever the features."""
  k1, k2 = jax.random.split(key)
  return {
    'w1': jax.random.normal(k1, (dim, hidden)) / math.sqrt(dim),
    'b1': jnp.zeros((hidden,)),
    'w2': 0.1 * jax.random.normal(k2, (hidden,)) / math.sqrt(hidden),
    'b2': jnp.asarray(keep_bias, jnp.float32),
  }


def keep_logit(theta: dict, features: jax.Array) -> jax.Array:
  """The policy's logit per example: sigmoid of it is the keep probability."""
  return jnp.tanh(features @ theta['w1'] + theta['b1']) @ theta['w2'] + theta['b2']


def log_prob(theta: dict, features, actions, mask) -> jax.Array:
  """Σ over `mask`ed candidates of log φθ(a | s), a = 1 keep, 0 drop."""
  z = keep_logit(theta, features)
  logp = jnp.where(actions, jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z))
  return jnp.sum(jnp.where(mask, logp, 0.0))


def features(onehot, probs, model_features, loss_scale: float) -> jax.Array:
  """Per-example teacher state, (K, 2C + 5).

  `model_features` are (iteration / T′, average training loss, best validation loss), the
  losses divided by `loss_scale`; they and −log p_y / loss_scale are clipped to [0, 1]. The
  margin p_y − max_{y'≠y} p_{y'} lies in [−1, 1] as it is.
  """
  p_y = jnp.sum(probs * onehot, axis=-1)
  other = jnp.max(jnp.where(onehot > 0, -jnp.inf, probs), axis=-1)
  loss = jnp.clip(-jnp.log(jnp.maximum(p_y, 1e-12)) / loss_scale, 0.0, 1.0)
  model = jnp.clip(jnp.asarray(model_features, jnp.float32), 0.0, 1.0)
  k = onehot.shape[0]
  return jnp.concatenate(
    [
      onehot,
      jnp.broadcast_to(model, (k, MODEL_FEATURES)),
      probs,
      loss[:, None],
      (p_y - other)[:, None],
    ],
    axis=-1,
  )


# -- batching and the baselines' keep rules ---------------------------------------------------
def fill_to_batch(keep, batch_size: int):
  """(selected, considered) of a pool with keep decisions `keep` (bool, pool order).

  The minibatch takes the kept candidates in pool order until it holds `batch_size`:
  selected = kept and fewer than M kept before it; considered = fewer than M kept before it
  (the teacher's decisions that mattered; the rest of the pool is never looked at).
  """
  keep = keep.astype(jnp.int32)
  before = jnp.cumsum(keep) - keep
  considered = before < batch_size
  return (keep > 0) & considered, considered


def spl_keep(losses, fraction):
  """Self-paced keep rule: the easiest ceil(fraction · K) candidates of the pool by loss."""
  k = losses.shape[0]
  rank = jnp.argsort(jnp.argsort(losses))
  return rank < jnp.ceil(fraction * k)


def spl_fraction(iteration, horizon: int, start: float, ramp: float):
  """The self-paced fraction kept: `start` at step 0, linearly to 1 at ramp · horizon."""
  progress = jnp.minimum(1.0, iteration / jnp.maximum(ramp * horizon, 1.0))
  return start + (1.0 - start) * progress


# -- reward and REINFORCE ---------------------------------------------------------------------
def reward(i_tau, horizon: int):
  """−log(i_τ / T′), with i_τ = T′ (reward 0) for an episode that never reached τ."""
  return -jnp.log(jnp.asarray(i_tau, jnp.float32) / horizon)


def reinforce_gradient(scores: PyTree, rewards, baseline):
  """The teacher's loss gradient: −mean_e (R_e − b) ∇θ log φθ(episode e) (a descent
  direction for optax, i.e. minus the REINFORCE estimate of ∇θ E[R])."""
  advantage = rewards - baseline
  return jax.tree_util.tree_map(
    lambda s: -jnp.tensordot(advantage, s, axes=1) / advantage.shape[0], scores
  )


def baseline_update(baseline, count, rewards, decay: float):
  """(baseline to subtract now, next baseline): the moving average b ← decay · b + (1 −
  decay) · mean R of the earlier batches; the first batch subtracts its own mean."""
  mean = jnp.mean(rewards)
  used = jnp.where(count > 0, baseline, mean)
  return used, jnp.where(count > 0, decay * used + (1.0 - decay) * mean, mean)


# -- the student ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Settings:
  """The static numbers of an episode."""

  num_classes: int
  batch_size: int  # M
  pool_size: int  # K = M · pool_factor
  horizon: int  # T′: the reward's cap and the iteration feature's scale
  tau: float
  check_every: int
  loss_scale: float
  stop_at_tau: bool  # freeze the student once it reaches τ (teacher training)
  spl_start: float
  spl_ramp: float
  rand_drop: float
  num_checks: int  # length of the recorded accuracy curve


class Task(NamedTuple):
  """The arrays an episode reads: candidates, the dev set (reward, best-loss feature) and an
  optional test set (the recorded curve; None: the dev accuracy is recorded)."""

  train_x: jax.Array
  train_y: jax.Array
  dev_x: jax.Array
  dev_y: jax.Array
  test_x: Any = None
  test_y: Any = None


@flax.struct.dataclass
class Student:
  params: PyTree
  opt_state: PyTree
  loss_sum: jax.Array  # sum of the training losses of the steps taken
  best_val: jax.Array  # best dev loss so far
  reached: jax.Array  # dev accuracy reached τ
  i_tau: jax.Array  # first iteration it did (the horizon until then)
  used: jax.Array  # examples trained on
  considered: jax.Array  # candidates the keep rule decided on
  dropped: jax.Array  # considered and dropped
  score: PyTree  # Σ ∇θ log φθ(a | s) over the steps taken
  curve_acc: jax.Array  # held-out accuracy at each check
  curve_used: jax.Array  # examples trained on at each check
  curve_considered: jax.Array  # candidates decided on at each check (the data drawn)


def init_student(model, optimizer, settings: Settings, sample_x, theta, key) -> Student:
  params = model.init(key, sample_x[:1])
  zero = jnp.zeros((), jnp.float32)
  return Student(
    params=params,
    opt_state=optimizer.init(params),
    loss_sum=zero,
    best_val=jnp.asarray(settings.loss_scale, jnp.float32),
    reached=jnp.zeros((), bool),
    i_tau=jnp.asarray(settings.horizon, jnp.int32),
    used=zero,
    considered=zero,
    dropped=zero,
    score=jax.tree_util.tree_map(jnp.zeros_like, theta),
    curve_acc=jnp.full((settings.num_checks,), jnp.nan, jnp.float32),
    curve_used=jnp.zeros((settings.num_checks,), jnp.float32),
    curve_considered=jnp.zeros((settings.num_checks,), jnp.float32),
  )


def _accuracy_and_loss(model, params, x, y):
  logits = model.apply(params, x)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.mean(jnp.argmax(logits, -1) == y), jnp.mean(loss)


def draws(settings: Settings, n: int, key, t):
  """Step `t`'s randomness: (pool indices into the n candidates, uniforms for the keep rules),
  from fold_in(key, t) alone, so a block's draws are one vmapped call (`run_checks`)."""
  k_pool, k_act = jax.random.split(jax.random.fold_in(key, t))
  idx = jax.random.randint(k_pool, (settings.pool_size,), 0, n)
  return idx, jax.random.uniform(k_act, (settings.pool_size,))


def student_step(
  model, optimizer, settings: Settings, task: Task, theta, method, key, s, t, drawn=None
):
  """Student `s` after its step `t` (0-based), the keep rule of `METHODS[method]`.

  One forward pass on the pool gives the features and, by its VJP, the gradient of the
  selected examples' mean loss; the teacher's score ∇θ log φθ(a | s) over the considered
  candidates is added while the student has not reached τ (or always, without stop_at_tau).
  `drawn`: the step's `draws`, when drawn ahead.
  """
  idx, uniform = drawn if drawn is not None else draws(settings, task.train_y.shape[0], key, t)
  x, y = task.train_x[idx], task.train_y[idx]
  logits, vjp = jax.vjp(lambda p: model.apply(p, x), s.params)
  onehot = jax.nn.one_hot(y, settings.num_classes)
  probs = jax.nn.softmax(logits)
  steps = jnp.maximum(t, 1).astype(jnp.float32)
  model_features = jnp.stack(
    [
      t / settings.horizon,
      s.loss_sum / steps / settings.loss_scale,
      s.best_val / settings.loss_scale,
    ]
  )
  feats = features(onehot, jax.lax.stop_gradient(probs), model_features, settings.loss_scale)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  z = keep_logit(theta, feats)
  rules = (
    lambda: uniform < jax.nn.sigmoid(z),
    lambda: jnp.ones_like(uniform, bool),
    lambda: spl_keep(
      losses, spl_fraction(t, settings.horizon, settings.spl_start, settings.spl_ramp)
    ),
    lambda: uniform >= settings.rand_drop,
  )
  if isinstance(method, int):  # one method for every student (teacher training): that rule only
    keep = rules[method]()
  else:
    keep = jnp.select([method == i for i in range(3)], [rule() for rule in rules[:3]], rules[3]())
  selected, considered = fill_to_batch(keep, settings.batch_size)
  count = jnp.sum(selected)
  weights = selected / jnp.maximum(count, 1)
  (grads,) = vjp((probs - onehot) * weights[:, None])
  updates, opt_state = optimizer.update(grads, s.opt_state, s.params)
  params = optax.apply_updates(s.params, updates)
  active = ~s.reached if settings.stop_at_tau else jnp.ones((), bool)

  def keep_if_active(new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, old)

  score_step = jax.grad(log_prob)(theta, feats, keep, considered)
  teaching = active & (method == 0)
  score = jax.tree_util.tree_map(lambda a, g: a + jnp.where(teaching, g, 0.0), s.score, score_step)
  f32 = jnp.float32
  s = s.replace(
    params=keep_if_active(params, s.params),
    opt_state=keep_if_active(opt_state, s.opt_state),
    loss_sum=s.loss_sum + jnp.where(active, jnp.sum(weights * losses), 0.0),
    used=s.used + jnp.where(active, count.astype(f32), 0.0),
    considered=s.considered + jnp.where(active, jnp.sum(considered).astype(f32), 0.0),
    dropped=s.dropped + jnp.where(active, jnp.sum(considered & ~keep).astype(f32), 0.0),
    score=score,
  )
  return s


def _check(model, settings: Settings, task: Task, t, s: Student) -> Student:
  dev_acc, dev_loss = _accuracy_and_loss(model, s.params, task.dev_x, task.dev_y)
  if task.test_x is not None:
    shown, _ = _accuracy_and_loss(model, s.params, task.test_x, task.test_y)
  else:
    shown = dev_acc
  now = (dev_acc >= settings.tau) & ~s.reached
  k = jnp.minimum((t + 1) // settings.check_every - 1, settings.num_checks - 1)
  return s.replace(
    best_val=jnp.minimum(s.best_val, dev_loss),
    reached=s.reached | now,
    i_tau=jnp.where(now, t + 1, s.i_tau),
    curve_acc=s.curve_acc.at[k].set(shown),
    curve_used=s.curve_used.at[k].set(s.used),
    curve_considered=s.curve_considered.at[k].set(s.considered),
  )


def run_checks(
  model, optimizer, settings, task, theta, method, key, s: Student, start, checks: int
):
  """Student `s` after `checks` blocks of `check_every` steps from step `start`, each block a
  `lax.scan` followed by the held-out check (no branch on the step: under vmap a `lax.cond`
  on a batched step would evaluate the held-out set at every step)."""
  every = settings.check_every

  n = task.train_y.shape[0]

  def step(s, xs):
    t, drawn = xs
    return student_step(model, optimizer, settings, task, theta, method, key, s, t, drawn), None

  def block(s, c):
    first = start + c * every
    ts = first + jnp.arange(every)
    # One vmapped draw per block, not one per step: on CPU each draw is a rolled threefry loop
    # whose cost barely depends on its size (the same numbers either way).
    drawn = jax.vmap(lambda t: draws(settings, n, key, t))(ts)
    s, _ = jax.lax.scan(step, s, (ts, drawn))
    return _check(model, settings, task, first + every - 1, s), None

  s, _ = jax.lax.scan(block, s, jnp.arange(checks))
  return s


def threefry_key(key) -> jax.Array:
  """A threefry key from any key (its raw words folded in): episodes draw from threefry.

  Why: under vmap JAX draws rbg bits for the whole batch from the batch's first key. Once the
  first episode is done its step counter is frozen, so its key stops changing and every
  episode still running redraws the same pools each block; vmapped MNIST episodes that reach
  τ in ~150 steps alone then never reached it in 2,000 steps. Threefry keys are batched key
  by key.
  """
  out = jax.random.key(0, impl='threefry2x32')
  for word in jnp.ravel(jax.random.key_data(key)):
    out = jax.random.fold_in(out, word)
  return out


def episode(model, optimizer, settings: Settings, task: Task, theta, key):
  """One teacher-training episode: a fresh student taught by `theta` until τ or T′ steps.

  Returns (reward, score, stats): the terminal reward −log(i_τ / T′), the score-function sum
  over the steps before τ, and the episode's i_τ, reached flag and drop ratio.
  """
  k_init, k_run = jax.random.split(threefry_key(key))
  s = init_student(model, optimizer, settings, task.train_x, theta, k_init)
  every = settings.check_every

  def more(carry):
    t, s = carry
    return (t < settings.horizon) & ~s.reached

  def chunk(carry):
    t, s = carry
    return t + every, run_checks(model, optimizer, settings, task, theta, 0, k_run, s, t, 1)

  # Blocks of `check_every` steps until τ or T′: a student frozen at τ would only repeat itself.
  # Under vmap the loop runs until every episode of the batch is done (the done ones frozen).
  _, s = jax.lax.while_loop(more, chunk, (jnp.zeros((), jnp.int32), s))
  stats = {
    'i_tau': s.i_tau.astype(jnp.float32),
    'reached': s.reached.astype(jnp.float32),
    'drop_ratio': s.dropped / jnp.maximum(s.considered, 1.0),
    'examples': s.used,
    'best_dev_accuracy': jnp.nanmax(s.curve_acc),
  }
  return reward(s.i_tau, settings.horizon), s.score, stats


def over_devices(fn, mesh=None, shared: int = 0):
  """`fn(*args)`, which vmaps over the leading axis of its arguments after the first `shared`
  (those are the same for every student), split over the first axis of `mesh` when it has
  several devices, each device vmapping its share (`shard_map`): several GPUs, or a CPU's
  cores exposed as host devices (`--xla_force_host_platform_device_count`), where one
  student's small kernels keep a single core busy. A student's result does not depend on the
  split. Traced values go in as arguments: `shard_map` cannot close over them."""
  if mesh is None or mesh.size == 1:
    return fn
  axis = mesh.axis_names[0]

  def spread(*args):
    specs = tuple(P() if i < shared else P(axis) for i in range(len(args)))
    # check_vma off: a student's counters start as constants and turn per-device in the scans.
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(axis), check_vma=False)(*args)

  return spread


def parallel_episodes(model, optimizer, settings, task, theta, keys, mesh=None):
  """`episode` for each key, vmapped: (rewards, scores, stats), each with a leading axis; over
  the devices of `mesh` when given (`over_devices`)."""

  def run(theta, task, keys):
    return jax.vmap(lambda k: episode(model, optimizer, settings, task, theta, k))(keys)

  return over_devices(run, mesh, shared=2)(theta, task, keys)


@flax.struct.dataclass
class TeacherState:
  step: jax.Array
  theta: dict
  opt_state: PyTree
  baseline: jax.Array
  baseline_count: jax.Array


def teacher_update(
  model, optimizer, settings, task, teacher_optimizer, decay, state, keys, mesh=None
):
  """One REINFORCE step of the teacher on episodes `keys` (over `mesh`): (state, metrics)."""
  rewards, scores, stats = parallel_episodes(
    model, optimizer, settings, task, state.theta, keys, mesh
  )
  used, baseline = baseline_update(state.baseline, state.baseline_count, rewards, decay)
  grads = reinforce_gradient(scores, rewards, used)
  updates, opt_state = teacher_optimizer.update(grads, state.opt_state, state.theta)
  state = state.replace(
    step=state.step + 1,
    theta=optax.apply_updates(state.theta, updates),
    opt_state=opt_state,
    baseline=baseline,
    baseline_count=state.baseline_count + 1,
  )
  metrics = {f'teacher/{k}': jnp.mean(v) for k, v in stats.items()}
  metrics['teacher/reward'] = jnp.mean(rewards)
  metrics['teacher/baseline'] = used
  metrics['teacher/grad_norm'] = optax.global_norm(grads)
  return state, metrics
