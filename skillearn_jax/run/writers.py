"""Where a run's numbers go: `metrics.jsonl`, TensorBoard, atomic JSON files.

This module owns the run's metric log, `workdir/metrics.jsonl` (one line
`{"step": s, name: float, ...}` per write, flushed at once so a killed run
loses at most the line being written) and its TensorBoard twin
(`workdir/tensorboard/`, via tensorboardX, no TensorFlow). A resumed run
drops the lines after its restored step (`truncate_metrics`, and TensorBoard's
purge step), so the log of a killed and resumed run equals an uninterrupted
one. `write_json_atomic` writes result files (summary, genotype) so a reader
never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping

import jax
import numpy as np

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _write_text_atomic(path: str, text: str) -> None:
  # A temporary file in the same directory, so os.replace is a rename.
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj: Any, *, indent: int | None = 2) -> None:
  """Writes `obj` as JSON to `path`; readers see the old or the new file."""
  _write_text_atomic(path, json.dumps(obj, indent=indent) + '\n')


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file.

  A final line without its newline that does not parse is the one a killed
  writer left half written, and is skipped; any other bad line is an error.
  """
  with open(path) as f:
    text = f.read()
  lines = text.split('\n')
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number == len(lines):  # no newline after it: an interrupted write
        break
      raise ValueError(f'{path}:{number}: not a JSON line ({e})') from e
  return records


def truncate_metrics(workdir: str, after_step: int | None) -> int:
  """Drops the records with step > `after_step` from workdir's metrics.jsonl.

  Returns the number of records kept. Call it when resuming from the
  checkpoint at `after_step`: the dropped lines will be written again.
  `after_step=None` keeps every complete record and drops only a half
  written last line.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return 0
  kept = [r for r in read_jsonl(path) if after_step is None or r['step'] <= after_step]
  _write_text_atomic(path, ''.join(json.dumps(r) + '\n' for r in kept))
  return len(kept)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Metric arrays fetched in one transfer and made Python floats."""
  values = jax.device_get(dict(metrics))
  out = {}
  for name, value in values.items():
    array = np.asarray(value)
    if array.size != 1:
      raise ValueError(f'metric {name!r}: must be a scalar, got shape {array.shape}')
    out[name] = float(array.reshape(()))
  return out


class MetricWriter:
  """Appends each step's scalar metrics to metrics.jsonl and TensorBoard.

  `start_step` is the step the run starts from (the restored checkpoint's, 0
  for a fresh run): records after it, left by an earlier attempt, are dropped
  from metrics.jsonl and, through tensorboardX's purge step, from TensorBoard.
  With None the log is appended to as it is (minus a half-written last line).
  Only process 0 writes when several processes run (`primary_only`).
  """

  def __init__(
    self,
    workdir: str,
    *,
    tensorboard: bool = True,
    start_step: int | None = None,
    primary_only: bool = True,
  ):
    self.workdir = workdir
    self.enabled = not primary_only or jax.process_index() == 0
    self._file = None
    self._summary = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    truncate_metrics(workdir, start_step)
    self._file = open(os.path.join(workdir, METRICS_FILE), 'a')
    if tensorboard:
      import tensorboardX  # pylint: disable=g-import-not-at-top

      purge_step = None if start_step is None else start_step + 1
      self._summary = tensorboardX.SummaryWriter(
        os.path.join(workdir, TENSORBOARD_DIR), purge_step=purge_step
      )

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    if self._file is None:
      raise ValueError('MetricWriter.write: the writer is closed')
    values = scalar_metrics(metrics)
    # NaN / inf are written as JSON's NaN / Infinity, which Python reads back.
    self._file.write(json.dumps({'step': int(step), **values}) + '\n')
    self._file.flush()
    if self._summary is not None:
      for name, value in values.items():
        self._summary.add_scalar(name, value, global_step=int(step))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    if self._summary is not None:
      self._summary.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._summary is not None:
      self._summary.close()
      self._summary = None

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
