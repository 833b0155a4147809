"""One readable console line per logged step: where the run is and when it ends.

This module owns the progress report of a training loop: epoch, step of
total, the loss and accuracy metrics (names whose last part ends in 'loss'
or 'accuracy', e.g. 'val/loss', 'eval/valid_accuracy') and any the experiment names in
full (at most a few, held-out and validation ones first or those the experiment names), the step time (median of recent steps, leaving
out the first one, which includes compilation), examples per second, and the
estimated time to finish (h:mm:ss).
"""

from __future__ import annotations

import collections
import math
import statistics
from typing import Any, Callable, Mapping

import numpy as np

REPORTED_SUFFIXES = ('loss', 'accuracy')
# Held-out and validation metrics lead the line, unless an experiment names its own.
DEFAULT_FIRST = ('eval/', 'test/', 'val/')


def format_duration(seconds: float) -> str:
  """h:mm:ss, hours unbounded (e.g. 26:03:07)."""
  total = max(0, int(round(seconds)))
  hours, rest = divmod(total, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}'


def reported_metrics(
  metrics: Mapping[str, Any], limit: int, first=DEFAULT_FIRST
) -> list[tuple[str, float]]:
  """The loss / accuracy metrics and those `first` names in full (e.g. 'teacher/reward'), at
  most `limit`: those whose names start with an entry of `first` lead, in that order and
  accuracies before losses; the rest keep their order."""

  def rank(item):
    index, (name, _) = item
    lead = next((i for i, prefix in enumerate(first) if name.startswith(prefix)), len(first))
    return (lead, 0 if name.endswith('accuracy') or lead == len(first) else 1, index)

  chosen = [
    (name, float(np.asarray(value)))
    for name, value in metrics.items()
    if name.rsplit('/', 1)[-1].endswith(REPORTED_SUFFIXES) or name in first
  ]
  return [item for _, item in sorted(enumerate(chosen), key=rank)][:limit]


class Progress:
  """Formats and prints progress lines for a run of `total_steps` steps.

  `update(step, ...)` is called after `step` steps have completed (counting
  from 0, so a run resumed at `start_step` first reports a later step), with
  `step_seconds` the wall time of that step. The first step after
  `start_step` includes compilation: it is left out of the step time, unless
  it is all there is.
  """

  def __init__(
    self,
    total_steps: int,
    steps_per_epoch: int,
    *,
    start_step: int = 0,
    print_fn: Callable[[str], Any] = print,
    batch_size: int | None = None,
    window: int = 50,
    max_metrics: int = 5,
    first=DEFAULT_FIRST,
  ):
    for field, value in (
      ('total_steps', total_steps),
      ('steps_per_epoch', steps_per_epoch),
      ('window', window),
      ('max_metrics', max_metrics),
    ):
      if value < 1:
        raise ValueError(f'Progress {field}: {value!r} is not allowed; must be >= 1')
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.total_epochs = math.ceil(total_steps / steps_per_epoch)
    self.start_step = start_step
    self.print_fn = print_fn
    self.batch_size = batch_size
    self.max_metrics = max_metrics
    self.first = tuple(first)
    self._compile_seconds = None
    self._recent = collections.deque(maxlen=window)

  def step_seconds(self) -> float | None:
    """Median recent seconds per step (the compiling one if alone)."""
    if self._recent:
      return statistics.median(self._recent)
    return self._compile_seconds

  def eta_seconds(self, step: int) -> float | None:
    per_step = self.step_seconds()
    if per_step is None:
      return None
    return per_step * max(0, self.total_steps - step)

  def epoch(self, step: int) -> int:
    """1-based epoch that the `step`-th step belongs to."""
    return max(1, math.ceil(step / self.steps_per_epoch))

  def update(self, step: int, metrics: Mapping[str, Any], step_seconds: float) -> str:
    if not self.start_step < step <= self.total_steps:
      raise ValueError(
        f'Progress.update step: {step!r} is outside this run\'s '
        f'steps ({self.start_step}, {self.total_steps}]'
      )
    if step == self.start_step + 1:
      self._compile_seconds = step_seconds
    else:
      self._recent.append(step_seconds)
    width = len(str(self.total_steps))
    parts = [
      f'epoch {self.epoch(step)}/{self.total_epochs}',
      f'step {step:>{width}}/{self.total_steps}',
    ]
    values = reported_metrics(metrics, self.max_metrics, self.first)
    if values:
      parts.append(' '.join(f'{name} {value:.4g}' for name, value in values))
    per_step = self.step_seconds()
    timing = f'{per_step:.3g} s/step'
    if not self._recent:
      timing += ' (incl. compile)'
    if self.batch_size and per_step > 0:
      timing += f' {self.batch_size / per_step:,.0f} ex/s'
    parts.append(timing)
    parts.append(f'ETA {format_duration(self.eta_seconds(step))}')
    line = ' | '.join(parts)
    self.print_fn(line)
    return line
