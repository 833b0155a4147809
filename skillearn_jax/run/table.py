"""The paper's table of one or more rows, from what their runs wrote.

This module owns the table: `collect(root)` reads every summary.json under a root (a row's
ROOT/search/seed_K and ROOT/eval/seed_K, or any runs made by hand: a summary with a test
accuracy is an evaluation, any other a search; a run of stages counts its stages' costs) and
ROOT/row.json when the row command wrote one (the row's name and the published figures).
`write_tables(roots, out)` writes table.md and table.csv in the papers' layout, a section per
evaluation dataset, test error % mean ± std (sample std over the evaluations), parameters (M)
as the papers count them, search cost in device-days of one search measured from the runs'
own wall time (GPU-days on GPUs, CPU-days on a CPU, labelled so), the published figure beside
ours, and table.png: both errors with their std as error bars.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Optional

import numpy as np

from skillearn_jax import config_check
from skillearn_jax.run import writers

SECONDS_PER_DAY = 86400.0
DATASET_TITLES = {
  'cifar10': 'CIFAR-10',
  'cifar100': 'CIFAR-100',
  'imagenet2012': 'ImageNet',
  'digits': 'digits (8x8, quick rows)',
}
CSV_FIELDS = (
  'row',
  'root',
  'dataset',
  'evaluations',
  'searches',
  'error_mean',
  'error_std',
  'top5_error_mean',
  'top5_error_std',
  'params_m',
  'search_cost_days',
  'cost_unit',
  'device_kind',
  'eval_cost_days',
  'published_method',
  'published_dataset',
  'published_error',
  'published_std',
  'published_top5_error',
  'published_params_m',
  'published_cost_gpu_days',
  'published_source',
)


def _read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _summaries(root: str) -> list[tuple[str, dict]]:
  """(workdir, summary) of every run under `root`; the stages of a staged run are not runs."""
  found = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith(('stage_', 'checkpoints', 'logs')))
    if 'summary.json' in files:
      found.append((folder, _read(os.path.join(folder, 'summary.json'))))
  return found


def run_cost(workdir: str, summary: dict) -> Optional[dict]:
  """{'days', 'platform', 'device_kind'} of one run: wall seconds x devices / 86400; a run of
  stages sums its stages'. None for a run that recorded no cost."""
  costs = [summary['cost']] if 'cost' in summary else []
  if not costs and 'stages' in summary:
    for stage in sorted(os.listdir(workdir)):
      path = os.path.join(workdir, stage, 'summary.json')
      if stage.startswith('stage_') and os.path.exists(path):
        costs += [c for c in [_read(path).get('cost')] if c]
  if not costs:
    return None
  return {
    'days': sum(c['train_s'] * c['devices'] for c in costs) / SECONDS_PER_DAY,
    'platform': costs[0]['platform'],
    'device_kind': costs[0]['device_kind'],
  }


def _mean_std(values) -> tuple[Optional[float], Optional[float]]:
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std


def collect(root: str) -> dict:
  """The row of `root`: our figures from its runs' summaries, the published ones from its
  row.json (when the row command made it)."""
  row_file = os.path.join(root, 'row.json')
  row = _read(row_file) if os.path.exists(row_file) else {}
  found = _summaries(root) if os.path.isdir(root) else []
  if not found:
    raise config_check.ConfigError(f'{root}: no run under it (no summary.json)')
  evals, searches = [], []
  for workdir, summary in found:
    (evals if summary.get('test_accuracy') is not None else searches).append((workdir, summary))
  errors = [100.0 * (1.0 - s['test_accuracy']) for _, s in evals]
  top5 = [
    100.0 * (1.0 - s['test_top5_accuracy'])
    for _, s in evals
    if s.get('test_top5_accuracy') is not None
  ]
  search_costs = [c for c in (run_cost(w, s) for w, s in searches) if c]
  eval_costs = [c for c in (run_cost(w, s) for w, s in evals) if c]
  platforms = sorted({c['platform'] for c in search_costs + eval_costs})
  kinds = sorted({c['device_kind'] for c in search_costs + eval_costs})
  error_mean, error_std = _mean_std(errors)
  top5_mean, top5_std = _mean_std(top5)
  published = (row.get('published') or [{}])[0]
  datasets = sorted({s.get('dataset', '') for _, s in evals})
  return {
    'row': row.get('name') or os.path.basename(os.path.normpath(root)),
    'root': root,
    'dataset': ','.join(datasets) or row.get('dataset', ''),
    'evaluations': len(evals),
    'searches': len(searches),
    'error_mean': error_mean,
    'error_std': error_std,
    'top5_error_mean': top5_mean,
    'top5_error_std': top5_std,
    'params_m': _mean_std([s.get('params_m') for _, s in evals])[0],
    'search_cost_days': _mean_std([c['days'] for c in search_costs])[0],
    'cost_unit': '/'.join(f'{p.upper()}-days' for p in platforms),
    'device_kind': ', '.join(kinds),
    'eval_cost_days': _mean_std([c['days'] for c in eval_costs])[0],
    **{
      f'published_{k}': published.get(k)
      for k in ('method', 'dataset', 'error', 'std', 'params_m', 'cost_gpu_days', 'source')
    },
    'published_top5_error': published.get('top5_error'),
  }


def _num(value, digits: int = 2) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '–'
  return f'{value:.{digits}f}'


def _params(value) -> str:
  """Millions with two decimals; the quick rows' tiny networks with two significant digits."""
  return _num(value) if value is None or value >= 0.1 else f'{value:.2g}'


def _pm(mean, std, digits: int = 2) -> str:
  if mean is None:
    return '–'
  return _num(mean, digits) + (f' ± {_num(std, digits)}' if std is not None else '')


def _cost(days) -> str:
  if days is None:
    return '–'
  return f'{days:.2g}' if days < 0.01 else f'{days:.2f}'


def markdown(rows: list[dict]) -> str:
  """One section per evaluation dataset, the papers' columns, the published figure beside."""
  out = ['# Paper rows', '']
  for dataset in sorted({r['dataset'] for r in rows}):
    group = [r for r in rows if r['dataset'] == dataset]
    imagenet = dataset == 'imagenet2012'
    out += [f'## {DATASET_TITLES.get(dataset, dataset)}', '']
    error = 'Top-1 error (%)' if imagenet else 'Error (%)'
    head = ['Row', error] + (['Top-5 error (%)'] if imagenet else [])
    head += ['Param (M)', 'Search cost', 'Runs (search / eval)']
    head += ['Published error (%)', 'Published param (M)', 'Published cost (GPU-days)', 'Source']
    out += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in group:
      pub_error = _pm(r['published_error'], r['published_std'])
      if r['published_top5_error'] is not None:
        pub_error += f' / {_num(r["published_top5_error"], 1)}'
      if r['published_dataset'] and r['published_dataset'] != dataset:
        pub_error += f' ({DATASET_TITLES.get(r["published_dataset"], r["published_dataset"])})'
      cells = [r['row'], _pm(r['error_mean'], r['error_std'])]
      if imagenet:
        cells.append(_pm(r['top5_error_mean'], r['top5_error_std']))
      cost = _cost(r['search_cost_days'])
      cells += [
        _params(r['params_m']),
        f'{cost} {r["cost_unit"]}' if r['search_cost_days'] is not None else cost,
        f'{r["searches"]} / {r["evaluations"]}',
        pub_error,
        _num(r['published_params_m'], 1),
        _num(r['published_cost_gpu_days'], 1),
        ', '.join(x for x in (r['published_method'], r['published_source']) if x) or '–',
      ]
      out.append('| ' + ' | '.join(cells) + ' |')
    kinds = sorted({r['device_kind'] for r in group if r['device_kind']})
    out += [
      '',
      'Error: mean ± sample std over the evaluations. Search cost: one search\'s wall time '
      '× devices, in days, on ' + (', '.join(kinds) or 'the devices recorded') + '.',
      '',
    ]
  return '\n'.join(out)


def csv_text(rows: list[dict]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator='\n')
  writer.writeheader()
  for r in rows:
    writer.writerow({k: '' if r[k] is None else r[k] for k in CSV_FIELDS})
  return buffer.getvalue()


def plot(rows: list[dict], path: str) -> None:
  """Our error and the published one per row, std as error bars; a panel per dataset."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  datasets = sorted({r['dataset'] for r in rows})
  fig, axes = plt.subplots(
    1, len(datasets), figsize=(max(4.0, 1.6 * len(rows) + 2), 3.8), squeeze=False
  )
  for ax, dataset in zip(axes[0], datasets):
    group = [r for r in rows if r['dataset'] == dataset]
    x = np.arange(len(group))
    for offset, key, label, marker in (
      (-0.12, 'error', 'ours', 'o'),
      (0.12, 'published_error', 'published', 's'),
    ):
      means = [r[f'{key}_mean'] if key == 'error' else r[key] for r in group]
      stds = [r['error_std'] if key == 'error' else r['published_std'] for r in group]
      keep = [i for i, m in enumerate(means) if m is not None]
      if keep:
        ax.errorbar(
          x[keep] + offset,
          [means[i] for i in keep],
          yerr=[stds[i] or 0.0 for i in keep],
          fmt=marker,
          capsize=4,
          label=label,
        )
    ax.set_xlim(-0.5, len(group) - 0.5)
    ax.set_xticks(x, [r['row'] for r in group], rotation=20, ha='right', fontsize=8)
    ax.set_title(DATASET_TITLES.get(dataset, dataset))
    ax.set_ylabel('test error (%)')
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)


def write_tables(roots: list[str], out: str) -> list[str]:
  """table.md, table.csv and table.png of `roots` in `out`; returns their paths."""
  rows = [collect(root) for root in roots]
  os.makedirs(out, exist_ok=True)
  paths = [os.path.join(out, name) for name in ('table.md', 'table.csv', 'table.png')]
  writers._write_text_atomic(paths[0], markdown(rows))  # pylint: disable=protected-access
  writers._write_text_atomic(paths[1], csv_text(rows))  # pylint: disable=protected-access
  plot(rows, paths[2])
  return paths
