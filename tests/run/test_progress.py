"""Progress lines: chosen metrics, median step time without compile, ETA."""

import jax.numpy as jnp
import pytest

from skillearn_jax.run import progress


@pytest.mark.parametrize(
  'seconds, text',
  [
    (0, '0:00:00'),
    (59.4, '0:00:59'),
    (59.6, '0:01:00'),
    (3725, '1:02:05'),
    (93784, '26:03:04'),
    (-3, '0:00:00'),
  ],
)
def test_format_duration(seconds, text):
  assert progress.format_duration(seconds) == text


def test_line_reports_epoch_metrics_median_time_throughput_and_eta():
  lines = []
  prog = progress.Progress(
    total_steps=1000, steps_per_epoch=250, print_fn=lines.append, batch_size=64
  )
  metrics = {
    'train/loss': jnp.float32(2.30258),
    'train/grad_norm/w': jnp.float32(9.0),
    'train/accuracy': jnp.float32(0.125),
    'val/loss': jnp.float32(2.4),
    'hypergrad/alphas/norm': jnp.float32(0.01),
    'val/objective': jnp.float32(2.4),
    'eval/valid_accuracy': 0.75,
  }
  first = prog.update(1, metrics, step_seconds=30.0)
  assert first == (
    'epoch 1/4 | step    1/1000 | eval/valid_accuracy 0.75 val/loss 2.4 '
    'train/loss 2.303 train/accuracy 0.125 | 30 s/step '
    '(incl. compile) 2 ex/s | ETA 8:19:30'
  )
  # Later steps: the compile step is left out; the median resists outliers.
  for step, secs in ((10, 0.5), (20, 0.7), (30, 5.0), (40, 0.6)):
    line = prog.update(step, metrics, step_seconds=secs)
  assert prog.step_seconds() == pytest.approx(0.65)
  # 960 steps left at 0.65 s = 624 s; 64 / 0.65 = 98 examples/s.
  assert line == (
    'epoch 1/4 | step   40/1000 | eval/valid_accuracy 0.75 val/loss 2.4 '
    'train/loss 2.303 train/accuracy 0.125 | '
    '0.65 s/step 98 ex/s | '
    'ETA 0:10:24'
  )
  assert lines[-1] == line and len(lines) == 5
  assert prog.update(251, {}, 0.65).startswith('epoch 2/4 | step  251/1000 | 0.65 s/step')


def test_metric_count_is_capped_and_epochs_round_up():
  prog = progress.Progress(total_steps=10, steps_per_epoch=4, print_fn=print, max_metrics=2)
  many = {f'learner{i}/loss': jnp.float32(i) for i in range(5)}
  # Logged every few steps: step 9's time is an ordinary step's.
  line = prog.update(9, many, 1.0)
  assert line == (
    'epoch 3/3 | step  9/10 | learner0/loss 0 learner1/loss 1 | 1 s/step | ETA 0:00:01'
  )


def test_resumed_run_counts_from_its_start_step_and_refuses_others():
  prog = progress.Progress(100, 10, start_step=50, print_fn=lambda _: None)
  with pytest.raises(ValueError, match=r'step: 50 is outside .*\(50, 100\]'):
    prog.update(50, {}, 1.0)
  with pytest.raises(ValueError, match='step: 101 is outside'):
    prog.update(101, {}, 1.0)
  assert '(incl. compile)' in prog.update(51, {}, 40.0)
  prog.update(60, {}, 2.0)
  assert prog.eta_seconds(60) == pytest.approx(80.0)


def test_bad_sizes_are_named():
  with pytest.raises(ValueError, match='steps_per_epoch: 0 is not allowed'):
    progress.Progress(10, 0)


def test_held_out_accuracies_lead_and_an_experiment_may_choose():
  metrics = {
    'round1/a/accuracy': 0.1,
    'round1/a/loss': 2.0,
    'round2/b/loss': 1.5,
    'val/loss': 1.2,
    'eval/round2/b_accuracy': 0.7,
  }
  names = [n for n, _ in progress.reported_metrics(metrics, 3)]
  assert names == ['eval/round2/b_accuracy', 'val/loss', 'round1/a/accuracy']
  names = [n for n, _ in progress.reported_metrics(metrics, 2, first=('round2/',))]
  assert names == ['round2/b/loss', 'round1/a/accuracy']
  # A metric named in full is reported whatever its name ends in (L2T's teacher/reward).
  metrics['teacher/reward'] = 1.3
  names = [n for n, _ in progress.reported_metrics(metrics, 2, first=('teacher/reward',))]
  assert names == ['teacher/reward', 'round1/a/accuracy']
  assert 'teacher/reward' not in [n for n, _ in progress.reported_metrics(metrics, 9)]
