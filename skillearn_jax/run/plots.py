"""Learning-curve figures drawn from a run's metrics.jsonl.

This module owns the run's summary plot: one panel per metric family
(losses, accuracies, learning rates, gradient and hypergradient norms), each
metric a line against the training step, drawn with matplotlib's Agg backend
so it needs no display. Families with no metric in the log are left out.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from skillearn_jax.run import writers


class Family(NamedTuple):
  title: str
  member: Callable[[str], bool]
  log_scale: bool  # when every value is positive


def _last(name: str) -> str:
  return name.rsplit('/', 1)[-1]


FAMILIES = (
  Family('losses', lambda n: _last(n) == 'loss' or _last(n).endswith('_loss'), False),
  Family('accuracies', lambda n: 'accuracy' in _last(n), False),
  Family(
    'learning rates', lambda n: any(part in ('lr', 'learning_rate') for part in n.split('/')), True
  ),
  Family('gradient norms', lambda n: '/grad_norm/' in n, True),
  Family('hypergradient norms', lambda n: n.startswith('hypergrad/') and 'norm' in _last(n), True),
)


def series_by_family(records: list[dict]) -> dict[str, dict[str, tuple]]:
  """family title -> metric name -> (steps, values), in log order."""
  curves: dict[str, tuple[list, list]] = {}
  for record in records:
    for name, value in record.items():
      if name == 'step' or value is None:
        continue
      steps, values = curves.setdefault(name, ([], []))
      steps.append(record['step'])
      values.append(value)
  grouped = {}
  for family in FAMILIES:
    members = {n: c for n, c in curves.items() if family.member(n)}
    if members:
      grouped[family.title] = members
  return grouped


def plot_learning_curves(metrics_jsonl_path: str, out_png: str) -> list[str]:
  """Draws the families found in the log into `out_png`; returns their titles.

  Raises ValueError when the log holds no metric of any family.
  """
  grouped = series_by_family(writers.read_jsonl(metrics_jsonl_path))
  if not grouped:
    raise ValueError(
      f'{metrics_jsonl_path}: no metric to plot; looked for {[f.title for f in FAMILIES]}'
    )
  columns = min(2, len(grouped))
  rows = math.ceil(len(grouped) / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 3.8 * rows), squeeze=False)
  log_scaled = {f.title: f.log_scale for f in FAMILIES}
  for ax, (title, members) in zip(axes.flat, grouped.items()):
    for name, (steps, values) in sorted(members.items()):
      ax.plot(steps, values, label=name, linewidth=1.4, marker='.' if len(steps) <= 30 else None)
    every_value = [v for _, values in members.values() for v in values]
    if log_scaled[title] and all(v > 0 for v in every_value):
      ax.set_yscale('log')
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small', loc='best')
  for ax in list(axes.flat)[len(grouped) :]:
    ax.set_visible(False)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return list(grouped)
