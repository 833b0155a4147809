"""The one training loop on an experiment that is no Skillearn program.

A least-squares fit written as a bare `Experiment` (its own pure step, held-out sums the loop
runs data parallel, per-epoch means, a description kept as history): what a teaching loop or
any other experiment gets from `run.loop` without the engine.
"""

import json
import os

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from skillearn_jax.run import checkpoints
from skillearn_jax.run import loop
from skillearn_jax.run import writers
from skillearn_jax.skills import base
from tests import conftest

STEPS_PER_EPOCH = 4
X = np.random.default_rng(0).normal(size=(8 * STEPS_PER_EPOCH, 3)).astype(np.float32)
Y = X @ np.array([1.0, -2.0, 0.5], np.float32)


def _config(**overrides):
  c = ml_collections.ConfigDict(
    dict(
      seed=0,
      rng_impl='threefry2x32',
      num_epochs=3,
      max_steps=-1,
      log_every_steps=1,
      checkpoint_every_steps=2,
      keep_checkpoints=2,
      eval_every_epochs=1,
      compilation_cache_dir=conftest.XLA_CACHE_DIR,
    )
  )
  c.update(overrides)
  return c


@flax.struct.dataclass
class FitState:
  step: jax.Array
  w: jax.Array


@pytest.fixture
def experiment():
  lr = 0.05

  def init(key):
    return FitState(jnp.zeros((), jnp.int32), 0.1 * jax.random.normal(key, (3,)))

  def step(state, batch, key):
    noise = 1e-3 * jax.random.normal(key, ())  # the step key reaches the step
    loss_fn = lambda w: jnp.mean((batch['x'] @ w - batch['y']) ** 2) + noise
    loss, grad = jax.value_and_grad(loss_fn)(state.w)
    return FitState(state.step + 1, state.w - lr * grad), {'train/loss': loss}

  def batches_at(step):
    rows = slice(8 * (step % STEPS_PER_EPOCH), 8 * (step % STEPS_PER_EPOCH + 1))
    return {'x': X[rows], 'y': Y[rows]}

  def eval_step(state, batch):
    return {'sq': jnp.sum((batch['x'] @ state.w - batch['y']) ** 2), 'n': batch['x'].shape[0]}

  return base.Experiment(
    init=init,
    step=step,
    batches_at=batches_at,
    steps_per_epoch=STEPS_PER_EPOCH,
    batch_size=8,
    step_metrics=lambda step: {'lr': lr},
    eval_step=eval_step,
    eval_batches=lambda: [{'x': X[:16], 'y': Y[:16]}, {'x': X[16:], 'y': Y[16:]}],
    eval_metrics=lambda t: {'test/mse': float(t['sq']) / float(t['n'])},
    epoch_means=('train/loss',),
    describe=lambda state: {'w0': float(state.w[0])},
    summary=lambda state, last: {'w': np.asarray(state.w).tolist()},
  )


def _rows(workdir):
  return [
    {k: v for k, v in r.items() if k not in ('step_seconds', 'examples_per_second')}
    for r in writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  ]


def test_the_loop_trains_evaluates_and_averages_per_epoch(tmp_path, experiment):
  workdir = str(tmp_path / 'fit')
  summary = loop.train_and_evaluate(_config(), workdir, experiment)
  rows = _rows(workdir)
  assert [r['step'] for r in rows] == list(range(1, 13))
  assert summary['steps'] == 12 and summary['epochs'] == 3
  assert len(summary['w']) == 3
  ends = [r for r in rows if r['step'] % STEPS_PER_EPOCH == 0]
  for end in ends:  # the epoch mean of the train loss, the held-out MSE
    epoch = [r['train/loss'] for r in rows if (r['step'] - 1) // 4 == end['step'] // 4 - 1]
    assert end['train/epoch_loss'] == pytest.approx(np.mean(epoch), rel=1e-6)
    assert 'test/mse' in end and end['lr'] == 0.05
  assert ends[-1]['test/mse'] < ends[0]['test/mse']
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['final_metrics']['test/mse'] == ends[-1]['test/mse']


def test_a_stopped_and_resumed_experiment_equals_an_uninterrupted_one(tmp_path, experiment):
  full, split = str(tmp_path / 'full'), str(tmp_path / 'split')
  loop.train_and_evaluate(_config(), full, experiment)
  loop.train_and_evaluate(_config(max_steps=6), split, experiment)  # mid-epoch 2
  assert checkpoints.Checkpointer(os.path.join(split, 'checkpoints')).latest_step() == 6
  loop.train_and_evaluate(_config(), split, experiment)
  rows, resumed = _rows(full), _rows(split)
  # The stopped run also evaluated where it stopped (step 6); every other row is the same,
  # epoch means included: their running sums are checkpointed.
  assert resumed[5]['train/loss'] == rows[5]['train/loss']
  assert resumed[:5] + resumed[6:] == rows[:5] + rows[6:]


def test_a_non_finite_step_stops_the_loop(tmp_path, experiment):
  with pytest.raises(loop.NonFiniteError, match="step 1: stage 'train', quantity 'loss'"):
    loop.train_and_evaluate(
      _config(),
      str(tmp_path / 'nan'),
      base.Experiment(
        **{**experiment.__dict__, 'step': lambda s, b, k: (s, {'train/loss': jnp.nan})}
      ),
    )


def test_the_root_key_is_the_seeding_convention():
  # threefry2x32 is what jax.random.PRNGKey draws: search runs seed as they always did.
  key = loop.root_key(_config(seed=3))
  np.testing.assert_array_equal(
    jax.random.key_data(jax.random.fold_in(key, 1)),
    jax.random.fold_in(jax.random.PRNGKey(3), 1),
  )
  rbg = loop.root_key(_config(seed=3, rng_impl='rbg'))
  assert jax.random.key_impl(rbg) != jax.random.key_impl(key)


def test_the_step_is_traced_once_for_the_whole_run(tmp_path, experiment):
  traces = []

  def counted(state, batch, key):
    traces.append(1)  # runs at trace time only
    return experiment.step(state, batch, key)

  counting = base.Experiment(**{**experiment.__dict__, 'step': counted})
  loop.train_and_evaluate(_config(), str(tmp_path / 'once'), counting)
  assert len(traces) == 1


def test_a_stop_ends_the_run_says_why_and_stays_stopped(tmp_path, experiment, capsys):
  stopping = base.Experiment(
    **{
      **experiment.__dict__,
      'should_stop': lambda history: 'enough' if len(history) == 2 else None,
    }
  )
  workdir = str(tmp_path / 'stop')
  summary = loop.train_and_evaluate(_config(), workdir, stopping)
  assert summary['steps'] == 2 * STEPS_PER_EPOCH
  assert summary['stopped'] == {'reason': 'enough', 'epoch': 2, 'step': 8}
  assert 'stopping early at epoch 2 (step 8): enough' in capsys.readouterr().out
  again = loop.train_and_evaluate(_config(), workdir, stopping)  # the same command again
  assert again['steps'] == 8 and again['stopped'] == summary['stopped']
  assert [r['step'] for r in _rows(workdir)] == list(range(1, 9))


def test_the_nan_stop_names_the_checkpoint_kept_or_that_none_exists(tmp_path, experiment):
  def nan_at(step_index):
    def step(state, batch, key):
      new, metrics = experiment.step(state, batch, key)
      loss = jnp.where(state.step == step_index, jnp.nan, metrics['train/loss'])
      return new, {'train/loss': loss}

    return base.Experiment(**{**experiment.__dict__, 'step': step})

  with pytest.raises(loop.NonFiniteError, match='No checkpoint exists yet'):
    loop.train_and_evaluate(_config(), str(tmp_path / 'a'), nan_at(0))
  with pytest.raises(loop.NonFiniteError, match=r'The last checkpoint, step 4, is kept in .*b'):
    loop.train_and_evaluate(_config(), str(tmp_path / 'b'), nan_at(5))


def test_the_loop_says_when_it_resumes_and_when_there_is_nothing_left(tmp_path, experiment, capsys):
  workdir = str(tmp_path / 'say')
  loop.train_and_evaluate(_config(max_steps=6), workdir, experiment)
  loop.train_and_evaluate(_config(), workdir, experiment)
  assert f'resumed from step 6 of 12 in {workdir}' in capsys.readouterr().out
  loop.train_and_evaluate(_config(), workdir, experiment)
  assert f'already complete: 12 of 12 steps in {workdir}' in capsys.readouterr().out


def test_the_run_ends_with_a_closing_summary(tmp_path, experiment, capsys):
  workdir = str(tmp_path / 'close')
  loop.train_and_evaluate(_config(), workdir, experiment)
  out = capsys.readouterr().out.splitlines()
  at = out.index('done: 12 steps (3 epochs)')
  assert 'train/loss' in out[at + 1]
  assert out[-1] == f'  in {workdir}: summary.json, metrics.jsonl, plots'
