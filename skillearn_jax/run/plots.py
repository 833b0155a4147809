"""Learning-curve figures drawn from a run's metrics.jsonl.

This module owns the run's summary plot: one panel per metric family
(losses, accuracies, learning rates, gradient and hypergradient norms) and,
in a run of several tasks (IL, MTL: names such as round1/TASK/accuracy,
val/TASK/loss, eval/round2/TASK_accuracy), one panel per family and task,
so that no panel holds more lines than a reader can tell apart. Each metric
is a line against the training step, its legend outside the data, to the
right of its panel; drawn with matplotlib's Agg backend, so it needs no
display. Families with no metric in the log are left out.
"""

from __future__ import annotations

import math
import re
from typing import Callable, NamedTuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from skillearn_jax.run import writers


class Family(NamedTuple):
  title: str
  member: Callable[[str], bool]
  log_scale: bool  # when every value is positive and they span a decade


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


_PREFIX = re.compile(r'^(?:(?:eval|val|valid|test|train)/)?(?:round\d+/)?')
_SUFFIX = re.compile(r'_(?:accuracy|loss)$')


def task_candidate(name: str) -> str | None:
  """The task a metric name seems to be about: TASK in [eval|val|valid|test|train/][roundN/]TASK/...
  or [...]TASK_accuracy; None for a metric with no such part (val/loss)."""
  rest = _PREFIX.sub('', name)
  if '/' in rest:
    return rest.split('/')[0]
  return _SUFFIX.sub('', rest) if _SUFFIX.search(rest) else None


def tasks_of(grouped: dict) -> tuple:
  """The tasks of a log: candidates named by >= 2 loss or accuracy metrics,
  when there are >= 2 of them; () for a run of one task."""
  counts: dict[str, int] = {}
  for title in ('losses', 'accuracies'):
    for name in grouped.get(title, {}):
      task = task_candidate(name)
      if task is not None:
        counts[task] = counts.get(task, 0) + 1
  tasks = tuple(sorted(t for t, c in counts.items() if c >= 2))
  return tasks if len(tasks) >= 2 else ()


def panels_of(grouped: dict) -> dict[str, dict[str, tuple]]:
  """panel title -> legend label -> (steps, values): a family's metrics, split
  by task when the log has several (the task's name taken out of the labels,
  which the title carries)."""
  tasks = tasks_of(grouped)
  panels: dict[str, dict[str, tuple]] = {}
  for title, members in grouped.items():
    by_task = {n: (task_candidate(n) if task_candidate(n) in tasks else None) for n in members}
    split = any(by_task.values())
    for name, curve in sorted(members.items()):
      task = by_task[name]
      panel = f'{title}: {task or "all tasks"}' if split else title
      panels.setdefault(panel, {})[_label(name, task)] = curve
  return panels


def _label(name: str, task: str | None) -> str:
  """A legend label: `name` less its task (the panel's title says it), less
  'grad_norm' (the family's) and repeated parts: round1/TASK/grad_norm/round1/TASK/encoder
  -> round1/encoder."""
  if not task:
    return name
  parts = re.sub(rf'(^|/){re.escape(task)}(_|/|$)', r'\1', name).split('/')
  kept = []
  for part in parts:
    if part and part != 'grad_norm' and part not in kept:
      kept.append(part)
  return '/'.join(kept) or name


def learning_curves_figure(records: list[dict]):
  """(figure, panel titles) of `records` (metrics.jsonl rows); (None, []) when they hold no
  metric of any family. The caller closes the figure."""
  grouped = series_by_family(records)
  if not grouped:
    return None, []
  panels = panels_of(grouped)
  columns = min(2, len(panels))
  rows = math.ceil(len(panels) / columns)
  fig, axes = plt.subplots(
    rows, columns, figsize=(8.4 * columns, 3.2 * rows), squeeze=False, layout='constrained'
  )
  log_scaled = {f.title: f.log_scale for f in FAMILIES}
  for ax, (title, members) in zip(axes.flat, panels.items()):
    for label, (steps, values) in members.items():
      ax.plot(steps, values, label=label, linewidth=1.4, marker='.' if len(steps) <= 30 else None)
    every_value = [v for _, values in members.values() for v in values]
    # Log scale only where the values span a decade or more: within one, its
    # ticks would read 1.1x10^0, 1.2x10^0, ...
    positive = all(v > 0 for v in every_value)
    if log_scaled[title.split(':')[0]] and positive and max(every_value) >= 10 * min(every_value):
      ax.set_yscale('log')
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(True, alpha=0.3)
    # Outside the axes, to the right: no curve is ever hidden under it.
    ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
  for ax in list(axes.flat)[len(panels) :]:
    ax.set_visible(False)
  return fig, list(panels)


def plot_learning_curves(metrics_jsonl_path: str, out_png: str) -> list[str]:
  """Draws the panels found in the log into `out_png`; returns their titles.

  Raises ValueError when the log holds no metric of any family.
  """
  fig, titles = learning_curves_figure(writers.read_jsonl(metrics_jsonl_path))
  if fig is None:
    raise ValueError(
      f'{metrics_jsonl_path}: no metric to plot; looked for {[f.title for f in FAMILIES]}'
    )
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return titles
