"""How the training loop feeds the devices (run.loop): it reads the step metrics back only
at log, checkpoint and epoch-end steps, all pending steps in one read, checks each of them in
order (a non-finite step between two reads is named, and stops the run before any save), and
averages the epoch means over every step, read or not."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.run import checkpoints
from skillearn_jax.run import loop
from skillearn_jax.run import writers
from tests.run import test_loop

STEPS_PER_EPOCH, _config = test_loop.STEPS_PER_EPOCH, test_loop._config
experiment = test_loop.experiment  # the least-squares fit's fixture


def _count_reads(monkeypatch) -> list:
  """Lengths of the loop's reads of pending step metrics (a list of per-step dicts)."""
  reads = []
  device_get = jax.device_get

  def counting(tree):
    if isinstance(tree, list):
      reads.append(len(tree))
    return device_get(tree)

  monkeypatch.setattr(loop.jax, 'device_get', counting)
  return reads


def test_metrics_are_read_only_at_log_checkpoint_and_epoch_end_steps(
  tmp_path,
  experiment,
  monkeypatch,
):
  reads = _count_reads(monkeypatch)
  workdir = str(tmp_path / 'fit')
  config = _config(num_epochs=2, log_every_steps=3, checkpoint_every_steps=100)
  loop.train_and_evaluate(config, workdir, experiment)
  # steps done 1 (the first, alone: its compile), 3 (log), 4 (epoch end), 6 (log), 8 (end)
  assert reads == [1, 2, 1, 2, 2]
  rows = writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['step'] for r in rows] == [3, 4, 6, 8]
  # the epoch means still average every step of the epoch, read one by one or together
  loop.train_and_evaluate(
    _config(num_epochs=2, log_every_steps=1), str(tmp_path / 'every'), experiment
  )
  losses = [
    r['train/loss']
    for r in writers.read_jsonl(os.path.join(str(tmp_path / 'every'), 'metrics.jsonl'))
  ]
  assert rows[1]['train/epoch_loss'] == pytest.approx(np.mean(losses[:4]), rel=1e-6)
  assert rows[3]['train/epoch_loss'] == pytest.approx(np.mean(losses[4:]), rel=1e-6)
  assert [r['train/loss'] for r in rows] == [losses[2], losses[3], losses[5], losses[7]]


def test_a_non_finite_step_between_reads_is_named_and_nothing_is_saved(
  tmp_path,
  experiment,
):
  def step(state, batch, key):
    state, metrics = experiment.step(state, batch, key)
    loss = jnp.where(state.step == 2, jnp.nan, metrics['train/loss'])  # the second step only
    return state, {'train/loss': loss}

  workdir = str(tmp_path / 'nan')
  config = _config(log_every_steps=STEPS_PER_EPOCH, checkpoint_every_steps=100)
  with pytest.raises(loop.NonFiniteError, match="step 2: stage 'train'.*No checkpoint"):
    loop.train_and_evaluate(config, workdir, dataclasses.replace(experiment, step=step))
  assert checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints')).latest_step() is None
