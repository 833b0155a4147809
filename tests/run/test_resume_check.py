"""Resuming a workdir under another config is refused, naming the fields."""

import json
import os

import pytest

from configs import hpo_ridge
from tests import conftest
from skillearn_jax.run import checkpoints
from skillearn_jax import config_check
from skillearn_jax.run import resume_check
from skillearn_jax.run import runner


def _config(**overrides):
  c = hpo_ridge.get_config('quick')
  c.num_epochs = 4
  c.compilation_cache_dir = conftest.XLA_CACHE_DIR
  for key, value in overrides.items():
    c[key] = value
  return c


def test_differences_name_nested_and_absent_fields_and_skip_allowed_ones():
  stored = {'seed': 0, 'data': {'batch_size': 64, 'data_dir': '/a'}, 'max_steps': 5, 'old': 1}
  given = {'seed': 0, 'data': {'batch_size': 32, 'data_dir': '/b'}, 'max_steps': -1, 'new': [1, 2]}
  assert resume_check.differences(stored, given) == [
    'data.batch_size: 64 -> 32',
    "new: '<absent>' -> [1, 2]",
    "old: 1 -> '<absent>'",
  ]
  assert resume_check.differences(stored, stored) == []
  # how exact hypergradients are computed changes no result; a workdir
  # written before the field existed resumes too
  assert (
    resume_check.differences(
      {'exact_mode': 'reverse_over_reverse'}, {'exact_mode': 'forward_over_reverse'}
    )
    == []
  )
  assert resume_check.differences({}, {'exact_mode': 'forward_over_reverse'}) == []


def test_a_workdir_without_checkpoints_takes_any_config(tmp_path):
  workdir = str(tmp_path)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'seed': 3}, f)
  resume_check.check_same_run(_config(), workdir, resuming=False)


def test_resuming_under_another_seed_is_refused_unless_allowed(tmp_path):
  workdir = str(tmp_path / 'run')
  runner.run(_config(max_steps=2), workdir)
  # Going further, logging more often: the same run.
  runner.run(_config(max_steps=3, log_every_steps=1), workdir)
  assert checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints')).latest_step() == 3
  with pytest.raises(
    config_check.ConfigError,
    match=r'(?s)holds checkpoints of another config.*'
    r'seed: 0 -> 1.*allow_config_change=True',
  ):
    runner.run(_config(seed=1), workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['seed'] == 0  # left as it was
  summary = runner.run(_config(seed=1, allow_config_change=True), workdir)
  assert summary['steps'] > 3


def test_an_older_workdir_config_resumes_under_the_renamed_and_retired_fields():
  stored = {'skill': 'darts', 'mode': 'search', 'seed': 0}
  current = {'experiment': 'darts', 'rng_impl': 'threefry2x32', 'seed': 0}
  assert resume_check.differences(stored, current) == []
  assert resume_check.differences(stored, {**current, 'rng_impl': 'rbg'}) == [
    "rng_impl: 'threefry2x32' -> 'rbg'"
  ]


def test_a_search_workdir_from_before_the_variants_resumes_unchanged():
  from configs import darts as darts_config  # pylint: disable=import-outside-toplevel

  current = json.loads(json.dumps(darts_config.get_config('quick').to_dict()))
  stored = json.loads(json.dumps(current))
  for block in ('space', 'pcdarts', 'darts_minus', 'pdarts', 'darts_plus', 'rng_impl', 'cg_steps'):
    del stored[block]
  del stored['alphas_optim']['warmup_epochs'], stored['alphas_optim']['clip']
  del stored['net']['conv_impl']
  stored['skill'], stored['mode'] = stored.pop('experiment'), 'search'
  assert resume_check.differences(stored, current) == []
  current['darts_plus']['enabled'] = True
  assert resume_check.differences(stored, current) == ['darts_plus.enabled: False -> True']


def test_an_il_workdir_from_before_il_coupling_resumes_under_the_sum():
  from configs import il_darts  # pylint: disable=import-outside-toplevel

  current = json.loads(json.dumps(il_darts.get_config('quick').to_dict()))
  stored = json.loads(json.dumps(current))
  del stored['il']['coupling']
  assert resume_check.differences(stored, current) == []
  current['il']['coupling'] = 'mean'
  assert resume_check.differences(stored, current) == ["il.coupling: 'sum' -> 'mean'"]


def test_precision_may_not_change_on_resume_and_older_workdirs_resume_as_float32():
  net = {'channels': 16, 'conv_impl': 'auto'}
  bf16 = {'net': {**net, 'precision': 'bfloat16'}}
  f32 = {'net': {**net, 'precision': 'float32'}}
  assert resume_check.differences(f32, bf16) == [
    "net.precision: 'float32' -> 'bfloat16'"  # bfloat16 changes the numbers
  ]
  assert resume_check.differences({'net': net}, f32) == []  # written before the field
  assert resume_check.differences({'net': net}, bf16) == ["net.precision: 'float32' -> 'bfloat16'"]
  # the convolution implementation may change (the same numbers either way)
  assert resume_check.differences(f32, {'net': {**f32['net'], 'conv_impl': 'xla'}}) == []
