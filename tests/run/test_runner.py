"""The training loop: resume equals uninterrupted, NaN stops, determinism."""

import json
import os

import jax
import numpy as np
import pytest

from configs import hpo_ridge
from tests import conftest
from skillearn_jax import core
from skillearn_jax import skills
from skillearn_jax.run import checkpoints
from skillearn_jax import config_check
from skillearn_jax.run import runner
from skillearn_jax.run import loop
from skillearn_jax.run import writers


def _config(**overrides):
  c = hpo_ridge.get_config('quick')
  c.num_epochs = 12
  c.compilation_cache_dir = conftest.XLA_CACHE_DIR
  return conftest.with_overrides(c, **overrides)


def _metrics(workdir):
  rows = writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return [
    {k: v for k, v in r.items() if k not in ('step_seconds', 'examples_per_second')} for r in rows
  ]


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    s = json.load(f)
  s['final_metrics'].pop('step_seconds')
  s['final_metrics'].pop('examples_per_second', None)
  s.pop('compile')  # this process's compile times
  s.pop('cost')  # wall seconds differ between runs
  return s


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
  full, split = str(tmp_path / 'full'), str(tmp_path / 'split')
  runner.run(_config(), full)
  runner.run(_config(max_steps=5), split)  # stops after step 5
  assert checkpoints.Checkpointer(os.path.join(split, 'checkpoints')).latest_step() == 5
  runner.run(_config(), split)  # same command: resumes
  assert _summary(split) == _summary(full)
  assert _metrics(split) == _metrics(full)
  for name in ('config.json', 'metrics.jsonl', 'summary.json', 'plots/learning_curves.png'):
    assert os.path.exists(os.path.join(full, name)), name


def test_compiler_memory_is_released_while_init_and_first_step_compile(tmp_path, releaser_events):
  runner.run(_config(max_steps=3), str(tmp_path / 'run'))
  # init: start, stop; first step: start, stop after step 1, stop at the end
  assert releaser_events == ['start', 'stop', 'start', 'stop', 'stop']


def test_prints_and_records_what_init_and_first_step_compiled(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  runner.run(_config(max_steps=3), workdir)
  lines = capsys.readouterr().out.splitlines()
  init = [l for l in lines if l.startswith('model init: ')]
  first = [l for l in lines if l.startswith('first step: ')]
  assert len(init) == 1 and len(first) == 1, lines
  assert 'XLA' in first[0] and 'compilation cache:' in first[0]
  assert any(l.startswith('Compiling the training step') for l in lines)
  with open(os.path.join(workdir, 'summary.json')) as f:
    compiled = json.load(f)['compile']
  assert compiled['first_step']['trace_s'] > 0  # a new step function traces
  assert compiled['first_step']['wall_s'] >= compiled['first_step']['trace_s']
  # Nothing left to run: the model is built, no step compiles.
  runner.run(_config(max_steps=3), workdir)
  lines = capsys.readouterr().out.splitlines()
  assert not any(l.startswith(('first step: ', 'Compiling')) for l in lines)
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert set(json.load(f)['compile']) == {'model_init'}


def test_same_seed_repeats_and_other_seed_differs(tmp_path):
  a, b, c = (str(tmp_path / n) for n in 'abc')
  runner.run(_config(), a)
  runner.run(_config(), b)
  runner.run(_config(seed=1), c)
  assert _metrics(a) == _metrics(b)
  assert _metrics(a) != _metrics(c)


def test_non_finite_loss_stops_naming_step_stage_and_quantity(tmp_path):
  workdir = str(tmp_path / 'nan')
  config = _config(**{'ridge.weight_lr': 5.0, 'num_epochs': 60})
  with pytest.raises(
    loop.NonFiniteError, match=r"at step \d+: stage '\w+', quantity '[\w/ ]+'"
  ) as e:
    runner.run(config, workdir)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'))
  last = ckpt.latest_step()
  assert last is not None
  # The step that went non-finite is the one after the kept checkpoint's.
  assert f'at step {last + 1}:' in str(e.value) and f'checkpoint, step {last},' in str(e.value)
  setup = skills.build(config)
  params, ms = setup.init(jax.random.key(0))
  template = core.init_state(setup.program, params, ms)
  state, _ = ckpt.restore(template, last)
  assert np.all(np.isfinite(np.asarray(state.params['w'])))


def test_a_mid_epoch_snapshot_is_replaced_at_the_epochs_end():
  history = loop.record_snapshot([], 1, 3, 'a')
  stopped = loop.record_snapshot(history, 2, 4, 'b')  # max_steps=4
  assert [h['step'] for h in stopped] == [3, 4]
  resumed = loop.record_snapshot(stopped, 2, 6, 'c')  # the epoch's end
  assert resumed == [
    {'epoch': 1, 'step': 3, 'describe': 'a'},
    {'epoch': 2, 'step': 6, 'describe': 'c'},
  ]
  assert [h['step'] for h in stopped] == [3, 4]  # not mutated


def test_check_finite_names_hypergradients_as_validation_stage():
  with pytest.raises(
    loop.NonFiniteError,
    match="step 3: stage 'validation', quantity 'hypergradient of alphas/norm'",
  ):
    loop.check_finite(3, {'hypergrad/alphas/norm': float('nan')})


def test_unknown_experiment_is_refused_before_anything_runs(tmp_path):
  with pytest.raises(config_check.ConfigError, match="config.experiment: 'teach'"):
    runner.run(_config(experiment='teach'), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_resume_still_equals_uninterrupted(
  tmp_path, capsys
):
  full, split = str(tmp_path / 'full'), str(tmp_path / 'split')
  runner.run(_config(), full)
  runner.run(_config(max_steps=5, checkpoint_every_steps=1, keep_checkpoints=3), split)
  os.remove(os.path.join(split, 'checkpoints', '5', 'state', '_METADATA'))
  capsys.readouterr()
  runner.run(_config(checkpoint_every_steps=1, keep_checkpoints=3), split)
  out = capsys.readouterr().out
  assert 'checkpoint 5 is damaged (missing state/_METADATA); moved aside to' in out
  assert 'resumed from step 4 of' in out
  assert os.listdir(os.path.join(split, 'damaged_checkpoints'))[0].startswith('5.')
  assert _summary(split) == _summary(full)
  assert _metrics(split) == _metrics(full)


def test_a_finished_workdir_is_left_untouched(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  summary = runner.run(_config(), workdir)
  before = {
    name: os.path.getmtime(os.path.join(workdir, name))
    for name in ('config.json', 'summary.json', 'metrics.jsonl', 'plots/learning_curves.png')
  }
  capsys.readouterr()
  again = runner.run(_config(), workdir)
  out = capsys.readouterr().out
  assert out.startswith(f"already complete: {summary['steps']} of 12 steps in {workdir}")
  assert again == json.loads(json.dumps(summary))
  for name, mtime in before.items():
    assert os.path.getmtime(os.path.join(workdir, name)) == mtime, name
  # More epochs asked of the same workdir: it is not complete any more, and goes on.
  runner.run(_config(num_epochs=13, allow_config_change=True), workdir)
  assert 'resumed from step' in capsys.readouterr().out
