"""Metric log, TensorBoard scalars, resume truncation, atomic JSON."""

import glob
import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from skillearn_jax.run import writers


def _metrics(step):
  return {
    'train/loss': jnp.float32(1.0 / step),
    'train/accuracy': np.float64(step / 100),
    'hypergrad/alphas/norm': jnp.array([step]),
  }


def _read_events(logdir):
  # TFRecord framing: u64 length, u32 crc, payload, u32 crc.
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos : pos + 8])
      events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
      pos += 12 + length + 4
  return events


def test_each_write_is_one_flushed_json_line_and_a_tensorboard_scalar(tmp_path):
  writer = writers.MetricWriter(str(tmp_path))
  writer.write(1, _metrics(1))
  writer.write(2, _metrics(2))
  # Readable before close: every line is flushed.
  records = writers.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert records == [
    {'step': 1, 'train/loss': 1.0, 'train/accuracy': 0.01, 'hypergrad/alphas/norm': 1.0},
    {'step': 2, 'train/loss': 0.5, 'train/accuracy': 0.02, 'hypergrad/alphas/norm': 2.0},
  ]
  assert all(type(v) is float for r in records for k, v in r.items() if k != 'step')
  writer.close()
  scalars = {
    (e.step, v.tag): v.simple_value
    for e in _read_events(str(tmp_path / 'tensorboard'))
    for v in e.summary.value
  }
  assert scalars[(2, 'train/loss')] == 0.5
  assert scalars[(1, 'hypergrad/alphas/norm')] == 1.0
  assert len(scalars) == 6


def test_non_scalar_metric_is_refused_by_name(tmp_path):
  with writers.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    with pytest.raises(
      ValueError,
      match=r"'val/logits': must be a scalar, "
      r'got shape \(2,\)',
    ):
      writer.write(1, {'val/logits': jnp.zeros(2)})


def _run(workdir, steps, *, start_step=None, kill_after=None):
  writer = writers.MetricWriter(workdir, start_step=start_step)
  for step in steps:
    writer.write(step, {'train/loss': jnp.float32(step * 0.25)})
    if step == kill_after:
      # Killed while writing the next line: half a record, no close().
      writer._file.write('{"step": %d, "train/lo' % (step + 1))
      writer._file.flush()
      return
  writer.close()


def test_killed_and_resumed_run_logs_the_same_as_an_uninterrupted_one(tmp_path):
  whole, resumed = str(tmp_path / 'whole'), str(tmp_path / 'resumed')
  _run(whole, range(1, 11))
  # Killed after step 8; the newest checkpoint was at step 6.
  _run(resumed, range(1, 11), kill_after=8)
  assert len(writers.read_jsonl(os.path.join(resumed, 'metrics.jsonl'))) == 8
  _run(resumed, range(7, 11), start_step=6)
  with (
    open(os.path.join(whole, 'metrics.jsonl')) as a,
    open(os.path.join(resumed, 'metrics.jsonl')) as b,
  ):
    assert a.read() == b.read()
  # TensorBoard is told to drop its events after step 6.
  purges = [
    e.step for e in _read_events(os.path.join(resumed, 'tensorboard')) if e.HasField('session_log')
  ]
  assert 7 in purges


def _steps(workdir):
  return [r['step'] for r in writers.read_jsonl(str(workdir / 'metrics.jsonl'))]


def test_fresh_run_replaces_a_stale_log(tmp_path):
  _run(str(tmp_path), range(1, 4))
  _run(str(tmp_path), range(1, 3), start_step=0)
  assert _steps(tmp_path) == [1, 2]


def test_without_start_step_the_log_is_appended_after_its_last_whole_line(tmp_path):
  _run(str(tmp_path), range(1, 4), kill_after=3)
  _run(str(tmp_path), range(4, 6))
  assert _steps(tmp_path) == [1, 2, 3, 4, 5]


def test_truncate_metrics_keeps_steps_up_to_the_given_one(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text(''.join(json.dumps({'step': s, 'x': s * 1.5}) + '\n' for s in (0, 5, 10, 15)))
  assert writers.truncate_metrics(str(tmp_path), 10) == 3
  assert [r['step'] for r in writers.read_jsonl(str(path))] == [0, 5, 10]
  assert writers.truncate_metrics(str(tmp_path / 'absent'), 3) == 0


def test_read_jsonl_refuses_a_corrupt_middle_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl:2: not a JSON line'):
    writers.read_jsonl(str(path))


def test_write_json_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path):
  path = str(tmp_path / 'sub' / 'summary.json')
  writers.write_json_atomic(path, {'a': 1})
  writers.write_json_atomic(path, {'b': [1, 2.5]})
  with open(path) as f:
    assert json.load(f) == {'b': [1, 2.5]}
  assert os.listdir(tmp_path / 'sub') == ['summary.json']
  with pytest.raises(TypeError):
    writers.write_json_atomic(path, {'c': object()})
  with open(path) as f:  # a failed write leaves the previous file
    assert json.load(f) == {'b': [1, 2.5]}
  assert os.listdir(tmp_path / 'sub') == ['summary.json']
