"""Learning-curve plot: families found, a real PNG with drawn curves."""

import math

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from skillearn_jax.run import plots
from skillearn_jax.run import writers


def _write_log(workdir, steps=60):
  with writers.MetricWriter(str(workdir), tensorboard=False) as writer:
    for step in range(1, steps + 1):
      metrics = {
        'train/loss': 2.3 * math.exp(-step / 20),
        'train/accuracy': 1 - math.exp(-step / 15),
        'lr/weights': 0.025 * (1 + math.cos(math.pi * step / steps)) / 2 + 1e-3,
        'train/grad_norm/weights': 5.0 / step,
        'hypergrad/alphas/norm': 0.1 / math.sqrt(step),
        'val/objective': 1.0,
      }
      if step % 10 == 0:  # evaluated less often than trained
        metrics.update(
          {'val/loss': 2.5 * math.exp(-step / 25), 'val/accuracy': 0.9 * (1 - math.exp(-step / 20))}
        )
      writer.write(step, {k: np.float32(v) for k, v in metrics.items()})
  return str(workdir / 'metrics.jsonl')


def test_families_group_metrics_by_name():
  grouped = plots.series_by_family(
    [
      {'step': 1, 'train/loss': 1.0, 'lr/weights': 0.1, 'other': 3.0},
      {
        'step': 2,
        'train/loss': 0.5,
        'val/loss': 0.7,
        'hypergrad/alphas/norm': 0.2,
        'schedule/learning_rate': 0.01,
      },
    ]
  )
  assert grouped['losses'] == {'train/loss': ([1, 2], [1.0, 0.5]), 'val/loss': ([2], [0.7])}
  assert sorted(grouped['learning rates']) == ['lr/weights', 'schedule/learning_rate']
  assert list(grouped['hypergradient norms']) == ['hypergrad/alphas/norm']
  assert 'accuracies' not in grouped


def test_plot_writes_a_png_with_one_panel_per_family(tmp_path):
  out = tmp_path / 'curves.png'
  titles = plots.plot_learning_curves(_write_log(tmp_path), str(out))
  assert titles == [
    'losses',
    'accuracies',
    'learning rates',
    'gradient norms',
    'hypergradient norms',
  ]
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  image = matplotlib.image.imread(str(out))
  assert image.shape[:2] == (3 * 320, 2 * 840)
  # Curves were drawn: many distinct colours, not a blank canvas.
  colours = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
  assert len(colours) > 100


def test_a_log_without_known_families_is_refused(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "val/objective": 0.3}\n')
  with pytest.raises(ValueError, match='no metric to plot'):
    plots.plot_learning_curves(str(path), str(tmp_path / 'x.png'))


def _il_records():
  rows = []
  for step in range(1, 11):
    row = {'step': step, 'val/loss': 3.0 / step, 'lr/weights': 0.025}
    for task in ('digits_a', 'digits_b'):
      for m in (1, 2):
        row[f'round{m}/{task}/loss'] = 2.0 / step
        row[f'round{m}/{task}/accuracy'] = 1 - 1.0 / step
        row[f'round{m}/{task}/grad_norm/round{m}/{task}/encoder'] = 10.0 * step
        row[f'eval/round{m}/{task}_accuracy'] = 0.5
      row[f'val/{task}/accuracy'] = 0.4
    rows.append(row)
  return rows


def test_a_run_of_several_tasks_gets_one_panel_per_family_and_task():
  fig, titles = plots.learning_curves_figure(_il_records())
  plt.close(fig)
  assert titles == [
    'losses: digits_a',
    'losses: digits_b',
    'losses: all tasks',
    'accuracies: digits_a',
    'accuracies: digits_b',
    'learning rates',
    'gradient norms: digits_a',
    'gradient norms: digits_b',
  ]
  panels = plots.panels_of(plots.series_by_family(_il_records()))
  # the task is in the title, not repeated in the labels
  assert sorted(panels['accuracies: digits_b']) == [
    'eval/round1/accuracy',
    'eval/round2/accuracy',
    'round1/accuracy',
    'round2/accuracy',
    'val/accuracy',
  ]
  assert sorted(panels['gradient norms: digits_a']) == ['round1/encoder', 'round2/encoder']
  assert list(panels['losses: all tasks']) == ['val/loss']


def test_a_run_of_one_task_keeps_one_panel_per_family(tmp_path):
  records = writers.read_jsonl(_write_log(tmp_path, steps=5))
  assert plots.tasks_of(plots.series_by_family(records)) == ()
  # an evaluation run: splits are not tasks
  names = ('train/loss', 'test/loss', 'test/accuracy', 'valid/loss', 'valid/accuracy')
  evaluation = [{'step': 1, **{n: 0.5 for n in names}}]
  assert plots.tasks_of(plots.series_by_family(evaluation)) == ()


def test_legends_sit_outside_the_data(tmp_path):
  for records in (_il_records(), writers.read_jsonl(_write_log(tmp_path, steps=5))):
    fig, _ = plots.learning_curves_figure(records)
    fig.canvas.draw()
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert shown
    for ax in shown:
      legend = ax.get_legend().get_window_extent()
      assert legend.x0 >= ax.get_window_extent().x1, ax.get_title()
    plt.close(fig)
