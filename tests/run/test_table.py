"""The table from hand-made runs' summaries (numbers by hand), and the cost a run records."""

import json
import os
import subprocess
import sys

import pytest

from configs import hpo_ridge
from skillearn_jax import config_check
from skillearn_jax.run import runner
from skillearn_jax.run import table
from tests import conftest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAY = 86400.0


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f)


def _cost(seconds, devices=1, platform='gpu', kind='NVIDIA H100'):
  return {'train_s': seconds, 'platform': platform, 'device_kind': kind, 'devices': devices}


@pytest.fixture
def hand_made(tmp_path):
  """Runs made by hand: two evaluations (97 % and 98 % accuracy), a search on 2 GPUs for half a
  day, a P-DARTS-like search whose stages cost 0.25 and 0.5 days; and a row's root."""
  runs = tmp_path / 'mine'
  for name, accuracy, top5 in (('eval_a', 0.97, 0.995), ('eval_b', 0.98, 0.999)):
    _write(
      str(runs / name / 'summary.json'),
      {
        'test_accuracy': accuracy,
        'test_top5_accuracy': top5,
        'params_m': 3.3,
        'dataset': 'imagenet2012',
        'cost': _cost(DAY),
      },
    )
  _write(str(runs / 'search_a' / 'summary.json'), {'cost': _cost(DAY / 4, devices=2)})
  _write(str(runs / 'search_b' / 'summary.json'), {'stages': [{}, {}], 'genotype': {}})
  _write(str(runs / 'search_b' / 'stage_1' / 'summary.json'), {'cost': _cost(DAY / 4)})
  _write(str(runs / 'search_b' / 'stage_2' / 'summary.json'), {'cost': _cost(DAY / 2)})
  return str(runs)


def test_a_table_of_hand_made_runs(hand_made, tmp_path):
  row = table.collect(hand_made)
  assert row['row'] == 'mine' and row['dataset'] == 'imagenet2012'
  assert (row['evaluations'], row['searches']) == (2, 2)
  # errors 3 % and 2 %: mean 2.5, sample std sqrt(0.5); top-5 0.5 % and 0.1 %.
  assert row['error_mean'] == pytest.approx(2.5)
  assert row['error_std'] == pytest.approx(0.5**0.5)
  assert row['top5_error_mean'] == pytest.approx(0.3)
  # one search 2 GPUs x 1/4 day, the other 1/4 + 1/2 day over its stages: mean 0.625.
  assert row['search_cost_days'] == pytest.approx(0.625)
  assert row['eval_cost_days'] == pytest.approx(1.0)
  assert row['cost_unit'] == 'GPU-days' and row['device_kind'] == 'NVIDIA H100'
  assert row['published_error'] is None

  out = str(tmp_path / 'out')
  md, csv_path, png = table.write_tables([hand_made], out)
  text = open(md).read()
  assert '## ImageNet' in text and 'Top-5 error (%)' in text
  assert '| mine | 2.50 ± 0.71 | 0.30 ± 0.28 | 3.30 | 0.62 GPU-days | 2 / 2 |' in text
  assert open(csv_path).read().splitlines()[0].split(',') == list(table.CSV_FIELDS)
  assert os.path.getsize(png) > 10000


def test_the_published_figure_comes_from_the_roots_row_json(hand_made, tmp_path):
  _write(
    os.path.join(hand_made, 'row.json'),
    {
      'name': 'darts_2nd_imagenet',
      'published': [
        {
          'method': 'DARTS-2nd-CIFAR-10',
          'dataset': 'imagenet2012',
          'error': 26.7,
          'std': None,
          'params_m': 4.7,
          'cost_gpu_days': 4.0,
          'source': 'Skillearn Table 9',
          'top5_error': 8.7,
        }
      ],
    },
  )
  text = table.markdown([table.collect(hand_made)])
  assert '| 26.70 / 8.7 | 4.7 | 4.0 | DARTS-2nd-CIFAR-10, Skillearn Table 9 |' in text
  assert '| darts_2nd_imagenet |' in text


def test_a_root_without_runs_is_one_line_exit_2(tmp_path):
  with pytest.raises(config_check.ConfigError, match='no run under it'):
    table.collect(str(tmp_path))
  result = subprocess.run(
    [sys.executable, '-m', 'skillearn_jax.table', str(tmp_path / 'none')],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=120,
    check=False,
  )
  assert result.returncode == 2
  assert [l for l in result.stderr.splitlines() if l.strip()] == [
    f'error: {tmp_path / "none"}: no run under it (no summary.json)'
  ]


def test_a_resumed_run_adds_its_seconds_to_those_before_its_checkpoint(tmp_path):
  config = hpo_ridge.get_config('quick')
  config.num_epochs = 12  # one step an epoch
  config.compilation_cache_dir = conftest.XLA_CACHE_DIR
  workdir = str(tmp_path / 'run')
  config.max_steps = 5
  first = runner.run(config, workdir)['cost']
  assert first['train_s'] > 0 and first['platform'] == 'cpu' and first['devices'] >= 1
  config.max_steps = -1
  second = runner.run(config, workdir)['cost']
  assert second['train_s'] > first['train_s']  # this process's time on top of the first's
  again = runner.run(config, workdir)['cost']  # already complete: nothing added
  assert again['train_s'] == second['train_s']
