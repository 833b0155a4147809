"""Architecture evaluation: outputs, resume, recipe numbers, schedules, losses, errors, tfds."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import eval_cifar
from configs import eval_imagenet
from skillearn_jax.nas import genotypes
from skillearn_jax.run import checkpoints
from skillearn_jax.run import compilation_cache
from skillearn_jax import config_check
from skillearn_jax.skills import eval_cell
from skillearn_jax.run import runner
from skillearn_jax.run import writers

# One node per cell: identity, separable conv, pooling and a strided skip, compiled fast.
TINY = genotypes.Genotype(
  normal=[('skip_connect', 0), ('sep_conv_3x3', 1)],
  normal_concat=[2],
  reduce=[('max_pool_3x3', 0), ('skip_connect', 1)],
  reduce_concat=[2],
)
STEPS_PER_EPOCH = 4


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """Config factory: the quick CIFAR recipe on 32 digits (4 steps an epoch), 2 cells of C=4,
  2 epochs, the genotype from a JSON file. The runs share a compilation cache, so only the
  first run of a shape compiles."""
  genotype_file = str(tmp_path_factory.mktemp('search') / 'genotype.json')
  genotypes.save_genotype(TINY, genotype_file)
  cache = str(tmp_path_factory.mktemp('xla_cache'))

  def make(**overrides):
    config = eval_cifar.get_config('quick')
    config.update_from_flattened_dict(
      {
        'genotype': genotype_file,
        'net.layers': 2,
        'net.channels': 4,
        'data.batch_size': 8,
        'data.train_examples': 8 * STEPS_PER_EPOCH,
        'data.eval_examples': 50,
        'data.eval_batch_size': 20,
        'num_epochs': 2,
        'log_every_steps': 1,
        'checkpoint_every_steps': 100,
        'compilation_cache_dir': cache,
      }
    )
    config.update_from_flattened_dict(overrides)
    return config

  yield make
  compilation_cache.enable('')  # leave the process as other tests expect it


def _rows(workdir):
  rows = writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return [
    {k: v for k, v in r.items() if k not in ('step_seconds', 'examples_per_second')} for r in rows
  ]


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  summary['final_metrics'].pop('step_seconds')
  summary['final_metrics'].pop('examples_per_second', None)
  summary.pop('compile')  # this process's compile times
  summary.pop('cost')  # wall seconds differ between runs
  return summary


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, tiny):
  workdir = str(tmp_path_factory.mktemp('full'))
  runner.run(tiny(), workdir)
  return workdir


def test_run_leaves_outputs_of_the_evaluated_genotype(full_run):
  for name in (
    'config.json',
    'genotype.json',
    'metrics.jsonl',
    'summary.json',
    'plots/learning_curves.png',
    'plots/cell_normal.png',
    'plots/cell_reduce.png',
  ):
    assert os.path.exists(os.path.join(full_run, name)), name
  assert genotypes.load_genotype(os.path.join(full_run, 'genotype.json')) == TINY
  assert checkpoints.Checkpointer(os.path.join(full_run, 'checkpoints')).latest_step() == 8
  rows = _rows(full_run)
  assert [r['step'] for r in rows] == list(range(1, 9))
  epoch_ends = [r for r in rows if r['step'] % STEPS_PER_EPOCH == 0]
  assert all('test/accuracy' in r and 'train/epoch_loss' in r for r in epoch_ends)
  assert not any('test/accuracy' in r for r in rows if r not in epoch_ends)
  # Drop path 0.2 · epoch / 2 epochs; cosine lr from 0.025 at epoch 0 to 0.0125 at epoch 1.
  assert [r['drop_path_prob'] for r in rows] == [0.0] * 4 + [0.1] * 4
  np.testing.assert_allclose([r['lr'] for r in rows], [0.025] * 4 + [0.0125] * 4, rtol=1e-6)
  summary = _summary(full_run)
  assert summary['test_accuracy'] == rows[-1]['test/accuracy']
  assert 0.0 <= summary['test_accuracy'] <= 1.0 and summary['test_top5_accuracy'] is not None
  assert summary['steps'] == 8 and summary['epochs'] == 2.0
  assert summary['params_m'] > 0 and summary['trained_params'] > 0
  with open(os.path.join(full_run, 'summary.json')) as f:
    compiled = json.load(f)['compile']
  assert set(compiled) == {'model_init', 'first_step'}
  assert compiled['first_step']['trace_s'] > 0
  assert compiled['first_step']['wall_s'] >= compiled['first_step']['xla_s']


def test_stopped_and_resumed_run_equals_uninterrupted(full_run, tiny, tmp_path, releaser_events):
  split = str(tmp_path / 'split')
  runner.run(tiny(max_steps=3), split)  # stops mid-epoch 1
  # compiler memory: while the model is built, and through step 1
  assert releaser_events == ['start', 'stop', 'start', 'stop', 'stop']
  assert 'test/accuracy' in _rows(split)[-1]  # a stopped run still reports
  assert checkpoints.Checkpointer(os.path.join(split, 'checkpoints')).latest_step() == 3
  runner.run(tiny(), split)  # same command: resumes
  assert _summary(split) == _summary(full_run)
  # The stopped run's final report at step 3 stays in its log; every other line agrees.
  assert [r for r in _rows(split) if r['step'] != 3] == [
    r for r in _rows(full_run) if r['step'] != 3
  ]


def test_recipes_hold_the_published_numbers():
  cifar = eval_cifar.get_config()
  assert (cifar.net.network, cifar.net.layers, cifar.net.channels) == ('cifar', 20, 36)
  assert (cifar.num_epochs, cifar.data.batch_size, cifar.data.name) == (600, 96, 'cifar10')
  assert (cifar.optim.schedule, cifar.optim.lr, cifar.optim.lr_min) == ('cosine', 0.025, 0.0)
  assert (cifar.optim.momentum, cifar.optim.weight_decay, cifar.optim.clip) == (0.9, 3e-4, 5.0)
  assert (cifar.data.cutout_length, cifar.net.auxiliary_weight) == (16, 0.4)
  assert (cifar.net.drop_path_prob, cifar.label_smoothing) == (0.2, 0.0)
  assert cifar.genotype == 'DARTS_V2'
  assert eval_cifar.get_config('cifar100').data.name == 'cifar100'
  imagenet = eval_imagenet.get_config()
  assert (imagenet.net.network, imagenet.net.layers, imagenet.net.channels) == ('imagenet', 14, 48)
  assert (imagenet.num_epochs, imagenet.data.batch_size) == (250, 128)
  assert (imagenet.optim.schedule, imagenet.optim.lr, imagenet.optim.decay_rate) == (
    'exponential',
    0.1,
    0.97,
  )
  assert (imagenet.optim.weight_decay, imagenet.optim.clip) == (3e-5, 5.0)
  assert (imagenet.label_smoothing, imagenet.net.auxiliary_weight) == (0.1, 0.4)
  assert imagenet.data.color_jitter


def test_learning_rate_schedules_step_once_per_epoch():
  spe = 10
  cosine = eval_cell.learning_rate_schedule(eval_cifar.get_config().optim, spe, 600)
  for epoch, expected in (
    (0, 0.025),
    (150, 0.025 * (1 + math.cos(math.pi / 4)) / 2),
    (300, 0.0125),
    (600, 0.0),
  ):
    for step in (epoch * spe, epoch * spe + spe - 1):
      assert float(cosine(step)) == pytest.approx(expected, abs=1e-8), (epoch, step)
  exponential = eval_cell.learning_rate_schedule(eval_imagenet.get_config().optim, spe, 250)
  for epoch in (0, 1, 10, 100):
    assert float(exponential(epoch * spe + spe // 2)) == pytest.approx(0.1 * 0.97**epoch, rel=1e-5)


def test_drop_path_ramps_linearly_with_the_epoch():
  prob = lambda step: eval_cell.drop_path_prob_at(step, 10, 600, 0.2)
  assert prob(0) == prob(9) == 0.0
  assert prob(10) == pytest.approx(0.2 / 600)
  assert prob(3000) == pytest.approx(0.1)
  assert prob(5999) == pytest.approx(0.2 * 599 / 600)
  assert float(prob(jnp.asarray(3005))) == pytest.approx(0.1)  # traced in the step


def test_label_smoothing_loss_by_hand():
  logits = jnp.asarray([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
  labels = jnp.asarray([0, 2])
  log_z = (math.log(math.exp(2) + 2), math.log(1 + math.e + math.exp(-1)))
  # Targets (1 - ε)·onehot + ε/3: loss = log Z - Σ target · logit.
  eps = 0.1
  first = log_z[0] - (1 - eps + eps / 3) * 2.0
  second = log_z[1] - (eps / 3 * 1.0 + (1 - eps + eps / 3) * -1.0)
  assert float(eval_cell.classification_loss(logits, labels, eps)) == pytest.approx(
    (first + second) / 2, rel=1e-6
  )
  assert float(eval_cell.classification_loss(logits, labels)) == pytest.approx(
    (log_z[0] - 2.0 + log_z[1] + 1.0) / 2, rel=1e-6
  )


def test_bad_genotype_name_fails_before_anything_runs(tmp_path, tiny):
  workdir = tmp_path / 'bad'
  with pytest.raises(
    config_check.ConfigError,
    match=r"config.genotype: unknown genotype 'DARTS_V9'.*DARTS_V2.*PDARTS",
  ):
    runner.run(tiny(genotype='DARTS_V9'), str(workdir))
  assert not workdir.exists()


def test_networks_too_big_for_the_images_are_refused(tiny, tmp_path):
  with pytest.raises(config_check.ConfigError, match='config.net.network'):
    runner.run(tiny(**{'net.network': 'imagenet'}), str(tmp_path / 'a'))
  with pytest.raises(config_check.ConfigError, match='config.net.auxiliary_weight'):
    runner.run(tiny(**{'net.auxiliary_weight': 0.4}), str(tmp_path / 'b'))
  with pytest.raises(config_check.ConfigError, match=r"config.optim.schedule: 'step'"):
    runner.run(tiny(**{'optim.schedule': 'step'}), str(tmp_path / 'c'))


def test_cifar10_on_tfds_mock_data_with_the_auxiliary_head(tmp_path, tiny):
  config = tiny(
    max_steps=1,
    **{
      'data.name': 'cifar10',
      'data.data_dir': str(tmp_path / 'tfds'),
      'data.batch_size': 4,
      'data.eval_examples': 8,
      'data.eval_batch_size': 8,
      'data.cutout_length': 16,
      'net.auxiliary_weight': 0.4,
      'net.layers': 1,
    },
  )
  with tfds.testing.mock_data(num_examples=16):
    summary = runner.run(config, str(tmp_path / 'run'))
  final = summary['final_metrics']
  assert summary['dataset'] == 'cifar10' and summary['steps'] == 1
  assert np.isfinite(final['train/auxiliary_loss']) and np.isfinite(final['test/loss'])
  assert 0.0 <= summary['test_accuracy'] <= 1.0
