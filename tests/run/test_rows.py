"""A paper row: end to end through submitit's local executor on tfds mock data, resume and
resubmission, the SLURM submission it generates, and bad input refused before anything is
written."""

import json
import os
import stat
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import rows as row_configs
from skillearn_jax import config_check
from skillearn_jax.run import rows
from skillearn_jax.run import table
from tests import conftest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOCK_EXAMPLES = 24  # search: 12/12 halves, 3 steps of 4; evaluation: 3 steps of 8


class MockDataJob(rows.RunJob):
  """The row's job inside tfds' mock data (in the job's own process)."""

  def __call__(self, config, workdir):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
      return super().__call__(config, workdir)


class FailingJob(MockDataJob):
  """Fails the evaluation of seed 1, runs everything else on the mock data."""

  def __call__(self, config, workdir):
    if workdir.endswith(os.path.join('eval', 'seed_1')):
      raise RuntimeError('the node went away')
    return super().__call__(config, workdir)


def tiny_row(tmp_path, **fields) -> ml_collections.ConfigDict:
  """DARTS-2nd's row shrunk to seconds: a first-order search of 2 cells on mock CIFAR-10,
  one epoch; a 2-cell evaluation of its genotype, one epoch; seeds 0 and 1, each evaluated."""
  row = row_configs.get_config('darts_2nd_c10')
  row.search.config = 'configs/darts.py:quick'
  row.search.overrides = ml_collections.ConfigDict(
    {
      'data': {'name': 'cifar10', 'batch_size': 4, 'eval_examples': 8},
      'net': {'layers': 2, 'nodes': 2, 'multiplier': 2, 'channels': 4},
      'hypergradient': 'first_order',
      'num_epochs': 1,
      'compilation_cache_dir': conftest.XLA_CACHE_DIR,
    }
  )
  row.evaluation.config = 'configs/eval_cifar.py:quick'
  row.evaluation.overrides = ml_collections.ConfigDict(
    {
      'data': {
        'name': 'cifar10',
        'data_dir': str(tmp_path / 'tfds'),
        'batch_size': 8,
        'eval_examples': 8,
        'eval_batch_size': 8,
      },
      'net': {'layers': 2, 'channels': 4},
      'num_epochs': 1,
      'compilation_cache_dir': conftest.XLA_CACHE_DIR,
    }
  )
  row.seeds, row.eval_seeds, row.selection = (0, 1), (), 'each'
  row.resources.time_min = 10
  row.update(fields)
  return row


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def test_a_row_runs_end_to_end_through_the_local_executor_and_resumes(tmp_path):
  root = str(tmp_path / 'row')
  said = []
  rows.run_row(
    tiny_row(tmp_path), root, executor='local', jobs=2, job=MockDataJob(), say=said.append
  )
  for kind in ('search', 'eval'):
    for seed in (0, 1):
      assert rows.is_complete(os.path.join(root, kind, f'seed_{seed}')), (kind, seed)
  # Each evaluation trained its own search's genotype with its own seed.
  for seed in (0, 1):
    evaluation = _summary(os.path.join(root, 'eval', f'seed_{seed}'))
    assert evaluation['genotype'] == os.path.join(root, 'search', f'seed_{seed}', 'genotype.json')
    with open(os.path.join(root, 'eval', f'seed_{seed}', 'config.json')) as f:
      assert json.load(f)['seed'] == seed
  assert any('log ' in line and os.path.join(root, 'logs') in line for line in said)

  # The table against the evaluations' and searches' own numbers.
  paths = table.write_tables([root], root)
  errors = [
    100 * (1 - _summary(os.path.join(root, 'eval', f'seed_{s}'))['test_accuracy']) for s in (0, 1)
  ]
  costs = [_summary(os.path.join(root, 'search', f'seed_{s}'))['cost'] for s in (0, 1)]
  with open(paths[1]) as f:
    lines = f.read().splitlines()
  got = dict(zip(lines[0].split(','), lines[1].split(',')))
  assert float(got['error_mean']) == pytest.approx(np.mean(errors))
  assert float(got['error_std']) == pytest.approx(np.std(errors, ddof=1))
  assert float(got['search_cost_days']) == pytest.approx(
    np.mean([c['train_s'] * c['devices'] / 86400 for c in costs])
  )
  assert got['cost_unit'] == 'CPU-days' and got['published_error'] == '2.76'
  with open(paths[0]) as f:
    assert '| darts_2nd_c10 |' in f.read()
  assert os.path.getsize(paths[2]) > 0

  # Rerun: nothing left, nothing submitted; an evaluation whose summary is gone resumes.
  os.remove(os.path.join(root, 'eval', 'seed_1', 'summary.json'))
  said.clear()
  rows.run_row(tiny_row(tmp_path), root, executor='inline', job=MockDataJob(), say=said.append)
  assert said[0] == 'search: 2 of 2 complete, 0 to run'
  assert said[1] == 'evaluation: 1 of 2 complete, 1 to run'
  assert _summary(os.path.join(root, 'eval', 'seed_1'))['steps'] == 3  # restored, not retrained


def test_a_failed_job_is_named_and_resubmitted_on_rerun(tmp_path):
  root = str(tmp_path / 'row')
  row = tiny_row(tmp_path, seeds=(0, 1))
  with pytest.raises(rows.RowError, match=r"1 evaluation run\(s\) failed: eval seed 1 failed: "):
    rows.run_row(row, root, executor='inline', job=FailingJob(), say=lambda _: None)
  assert rows.is_complete(os.path.join(root, 'eval', 'seed_0'))
  assert not rows.is_complete(os.path.join(root, 'eval', 'seed_1'))
  said = []
  rows.run_row(row, root, executor='inline', job=MockDataJob(), say=said.append)
  assert 'evaluation: 1 of 2 complete, 1 to run' in said
  assert rows.is_complete(os.path.join(root, 'eval', 'seed_1'))


def test_the_best_search_by_validation_is_evaluated_with_every_eval_seed(tmp_path):
  root = tmp_path / 'row'
  for seed, accuracy in ((0, 0.5), (1, 0.75), (2, 0.75)):
    folder = root / 'search' / f'seed_{seed}'
    folder.mkdir(parents=True)
    (folder / 'summary.json').write_text(
      json.dumps({'complete': True, 'final_metrics': {'eval/valid_accuracy': accuracy}})
    )
  row = tiny_row(tmp_path, seeds=(0, 1, 2), eval_seeds=(5, 6), selection='best_by_search_val')
  chosen = rows.select(row, str(root))
  assert chosen['best_search_seed'] == 1  # ties go to the first seed
  best = os.path.abspath(str(root / 'search' / 'seed_1' / 'genotype.json'))
  assert chosen['genotypes'] == {'5': best, '6': best}
  assert [(r.seed, r.config['genotype']) for r in rows.eval_runs(row, str(root), chosen)] == [
    (5, best),
    (6, best),
  ]
  row.selection_metric = 'eval/nothing'
  with pytest.raises(config_check.ConfigError, match='row.selection_metric'):
    rows.select(row, str(root))


def _fake_slurm(tmp_path, monkeypatch) -> str:
  """`sbatch` and `srun` stand-ins on PATH: sbatch answers as SLURM does."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name, body in (('sbatch', 'echo "Submitted batch job 4242"'), ('srun', 'exit 0')):
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  return str(bin_dir)


def test_slurm_gets_one_job_array_with_the_rows_resources(tmp_path, monkeypatch):
  _fake_slurm(tmp_path, monkeypatch)
  row = row_configs.get_config('il_darts_2nd_c100')
  row.slurm.partition, row.slurm.account, row.slurm.constraint = 'gpu', 'lab', 'v100'
  row.slurm.setup = ('module load cuda/12.4',)
  row.resources.time_min, row.resources.mem_gb = 90, 32
  folder = str(tmp_path / 'logs' / '%j')
  executor = rows.make_executor(row, 'slurm', folder, jobs=3)
  runs = rows.search_runs(row, str(tmp_path / 'root'))[:3]
  jobs = rows.submit(executor, runs, rows.RunJob())
  assert [j.job_id for j in jobs] == ['4242_0', '4242_1', '4242_2']
  [script] = [p for p in (tmp_path / 'logs').rglob('*.sh') if not os.path.islink(p)] or list(
    (tmp_path / 'logs').rglob('*.sh')
  )
  text = script.read_text()
  for line in (
    '#SBATCH --array=0-2%3',
    '#SBATCH --partition=gpu',
    '#SBATCH --account=lab',
    '#SBATCH --constraint=v100',
    '#SBATCH --gpus-per-node=1',
    '#SBATCH --cpus-per-task=8',
    '#SBATCH --mem=32GB',
    '#SBATCH --time=90',
    '#SBATCH --job-name=row-il_darts_2nd_c100',
    f'#SBATCH --output={tmp_path}/logs/%A_%a/%A_%a_0_log.out',
    'module load cuda/12.4',
  ):
    assert line in text.splitlines(), line
  assert 'srun' in text and '-m submitit.core._submit' in text
  # The jobs run the row's search configs with their seeds.
  assert [r.config['seed'] for r in runs] == [0, 1, 2]


def _row_cli(*args):
  return subprocess.run(
    [sys.executable, '-m', 'skillearn_jax.row', *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
    check=False,
  )


def test_an_unknown_row_is_one_line_exit_2_and_no_root(tmp_path):
  root = tmp_path / 'root'
  result = _row_cli('--row=configs/rows.py:darts_9th_c10', f'--root={root}')
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith(
    "error: --row: configs/rows.py: unknown row 'darts_9th_c10'"
  )
  assert not root.exists()


def _refused(row, root, match):
  before = {p: p.read_bytes() for p in root.rglob('*') if p.is_file()} if root.exists() else None
  with pytest.raises(config_check.ConfigError, match=match):
    rows.run_row(row, str(root), executor='inline', say=lambda _: None)
  after = {p: p.read_bytes() for p in root.rglob('*') if p.is_file()} if root.exists() else None
  assert after == before  # nothing written, nothing overwritten


@pytest.mark.parametrize(
  'fields, match',
  [
    (dict(seeds=()), r'^row.seeds: empty'),
    (dict(seeds=(0, 1, 0)), r'^row.seeds: \(0, 1, 0\) repeats \(0,\); each seed once$'),
    (dict(seeds=(0, -1)), r'^row.seeds: -1 is not allowed'),
    (dict(selection='best'), r"^row.selection: 'best' is not allowed; allowed: \('each'"),
    (dict(eval_seeds=(3,)), r'^row.eval_seeds: only for selection'),
  ],
)
def test_bad_seeds_and_selection_are_refused_before_anything_is_written(tmp_path, fields, match):
  _refused(tiny_row(tmp_path, **fields), tmp_path / 'root', match)


def test_an_evaluation_that_does_not_fit_the_search_is_refused(tmp_path):
  row = row_configs.get_config('darts_2nd_c10,quick')  # searches the 8x8 digits
  row.evaluation.config = 'configs/eval_cifar.py'
  _refused(
    row,
    tmp_path / 'root',
    r"^row.evaluation: data.name 'cifar10' \(CIFAR 32x32 RGB\) does not fit a cell searched "
    r"on digits .*allowed: \('digits', 'digits_a', 'digits_b'\)$",
  )
  imagenet = row_configs.get_config('il_darts_2nd_imagenet')  # CIFAR -> ImageNet: the papers'
  rows.check_row(imagenet)


def test_a_root_of_another_row_is_refused_and_kept(tmp_path):
  root = tmp_path / 'root'
  rows.prepare_root(tiny_row(tmp_path), str(root))
  (root / 'search' / 'seed_0').mkdir(parents=True)
  (root / 'search' / 'seed_0' / 'summary.json').write_text('{"complete": true}')
  _refused(
    tiny_row(tmp_path, seeds=(0, 2)),
    root,
    r"^--root: .* holds the runs of row 'darts_2nd_c10'; this row differs in seeds "
    r'\(\[0, 1\] -> \[0, 2\]\); use another --root$',
  )
  other = tiny_row(tmp_path)
  other.slurm.partition = 'long'  # resources and queue may change
  rows.prepare_root(other, str(root))


def test_every_published_row_has_a_config_that_checks():
  for name in row_configs.ROWS:
    for arg in (name, f'{name},quick'):
      row = row_configs.get_config(arg)
      rows.check_row(row)
      assert row.published[0]['dataset'] == row.dataset
