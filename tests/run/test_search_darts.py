"""End to end: a shrunken DARTS search on tfds mock CIFAR-10 through main's
`run`, its outputs, and resume giving the same genotype and final metrics.

The three runs share a persistent compilation cache, so only the first pays
the compile.
"""

import json
import os

import pytest
import tensorflow_datasets as tfds

from configs import darts as darts_config
from tests import conftest
from skillearn_jax.run import checkpoints
from skillearn_jax.run import runner


def _config(**overrides):
  c = darts_config.get_config('quick')
  c.data.name = 'cifar10'
  c.data.batch_size = 4
  c.data.eval_examples = 8
  c.net.layers, c.net.nodes, c.net.multiplier, c.net.channels = 2, 2, 2, 4
  c.hypergradient = 'first_order'
  c.num_epochs = 2
  c.log_every_steps = 1
  c.checkpoint_every_steps = 2
  c.compilation_cache_dir = conftest.XLA_CACHE_DIR
  for k, v in overrides.items():
    c[k] = v
  return c


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def _final(workdir):
  final = dict(_read(workdir, 'summary.json')['final_metrics'])
  final.pop('step_seconds')  # timings differ between runs
  final.pop('examples_per_second')
  return final


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('darts')
  full, split = str(root / 'full'), str(root / 'split')
  # 24 mock examples -> 12/12 halves -> 3 steps per epoch, 6 steps in all.
  with tfds.testing.mock_data(num_examples=24):
    runner.run(_config(), full)
    runner.run(_config(max_steps=4), split)
    runner.run(_config(), split)
  return full, split


def test_search_writes_every_output(runs):
  full, _ = runs
  for name in (
    'config.json',
    'metrics.jsonl',
    'summary.json',
    'genotype.json',
    'plots/learning_curves.png',
    'plots/cell_normal.png',
    'plots/cell_reduce.png',
    'plots/alpha_normal.png',
    'plots/alpha_reduce.png',
  ):
    assert os.path.getsize(os.path.join(full, name)) > 0, name
  assert os.listdir(os.path.join(full, 'tensorboard'))
  summary = _read(full, 'summary.json')
  assert summary['steps'] == 6
  assert 'eval/valid_accuracy' in summary['final_metrics']
  genotype = _read(full, 'genotype.json')
  assert len(genotype['normal']) == 4 and genotype['normal_concat'] == [2, 3]


def _history(workdir):
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'))
  return ckpt.restore_extra()['history']


def test_resumed_search_ends_like_an_uninterrupted_one(runs):
  full, split = runs
  # The snapshot where max_steps stopped (step 4) gave way to epoch 2's end.
  assert [(h['epoch'], h['step']) for h in _history(split)] == [(1, 3), (2, 6)]
  assert _history(split) == _history(full)
  assert _read(split, 'genotype.json') == _read(full, 'genotype.json')
  assert _final(split) == _final(full)
  assert _read(split, 'summary.json')['describe'] == _read(full, 'summary.json')['describe']
