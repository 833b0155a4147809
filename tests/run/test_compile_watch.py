"""Tests for skillearn_jax.run.compile_watch: phases are the union of JAX's
spans, cache loads and stores are counted, listening ends at `stop`, and a
real compile then a cache load are reported as such."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from skillearn_jax.run import compile_watch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _span(phase, start, end):
  jax.monitoring.record_event_time_span(compile_watch.PHASE_EVENTS[phase], start, end, fun_name='f')


@pytest.mark.parametrize(
  'spans, seconds',
  [
    ([], 0.0),
    ([(0.0, 10.0), (2.0, 5.0)], 10.0),  # nested: the outer one
    ([(0.0, 4.0), (3.0, 6.0), (8.0, 9.0)], 7.0),  # overlapping, disjoint
    ([(5.0, 6.0), (0.0, 1.0)], 2.0),  # any order
  ],
)
def test_union_seconds_counts_each_second_once(spans, seconds):
  assert compile_watch.union_seconds(spans) == pytest.approx(seconds)


def test_watch_sums_phases_and_counts_cache_events_until_stopped():
  watch = compile_watch.CompileWatch().start()
  _span('trace', 100.0, 110.0)
  _span('trace', 102.0, 104.0)  # a nested jit's trace inside the outer
  _span('lower', 110.0, 113.0)
  _span('xla', 113.0, 150.0)
  jax.monitoring.record_event(compile_watch.CACHE_HIT_EVENT)
  jax.monitoring.record_event(compile_watch.CACHE_STORE_EVENT)
  jax.monitoring.record_event(compile_watch.CACHE_STORE_EVENT)
  jax.monitoring.record_event_duration_secs(compile_watch.CACHE_SAVED_EVENT, 30.0)
  jax.monitoring.record_event('/some/other/event')
  report = watch.stop()
  # After stop, nothing more is counted.
  _span('xla', 200.0, 300.0)
  jax.monitoring.record_event(compile_watch.CACHE_HIT_EVENT)
  assert watch.stop() == report
  assert report._replace(wall_s=0.0) == compile_watch.CompileReport(
    wall_s=0.0,
    trace_s=10.0,
    lower_s=3.0,
    xla_s=37.0,
    cache_loaded=1,
    cache_stored=2,
    cache_saved_s=30.0,
  )
  line = report.describe('first step')
  assert line.startswith('first step: ')
  assert (
    'trace 10.0 s, lower 3.0 s, XLA 37.0 s; compilation cache: '
    '1 program loaded (30 s of compiling saved), 2 programs stored for '
    'the next run)'
  ) in line
  assert report.describe('x', cache_on=False).endswith('XLA 37.0 s; compilation cache: off)')


def test_watch_is_started_once_and_stopped_after_start():
  watch = compile_watch.CompileWatch()
  with pytest.raises(RuntimeError, match='never started'):
    watch.stop()
  with watch:
    with pytest.raises(RuntimeError, match='already started'):
      watch.start()
  assert watch.report().cache_loaded == 0


SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp
    from skillearn_jax.run import compilation_cache, compile_watch

    compilation_cache.enable(sys.argv[1], min_compile_time_secs=0)

    def step(w, x):
      for _ in range(3):
        w = w - 0.1 * jax.grad(lambda w: jnp.mean(jnp.tanh(x @ w) ** 2))(w)
      return w

    w, x = jnp.ones((4, 2)), jnp.ones((8, 4))
    reports = []
    for _ in range(2):
      jax.clear_caches()   # the second pass is a new process's first step
      with compile_watch.CompileWatch() as watch:
        jax.jit(step)(w, x).block_until_ready()
      reports.append(watch.report()._asdict())
    print('RESULT ' + json.dumps(reports))
''')


def test_a_compile_then_a_cache_load_are_reported(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run(
    [sys.executable, '-c', SCRIPT, str(tmp_path / 'xla')],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  compiled, loaded = json.loads(line[len('RESULT ') :])
  assert compiled['cache_stored'] >= 1 and compiled['cache_loaded'] == 0
  assert loaded['cache_loaded'] >= 1 and loaded['cache_stored'] == 0
  for report in (compiled, loaded):
    assert report['trace_s'] > 0 and report['lower_s'] > 0
    assert 0 < report['xla_s'] <= report['wall_s']


def test_runner_compiles_release_watch_and_print_in_order(releaser_events):
  lines = []
  compiles = compile_watch.RunnerCompiles(cache_on=True, print_fn=lines.append)
  with compiles.model_init():
    jax.jit(lambda x: x * 3.0)(1.0)
  compiles.first_step(steps_to_run=True)
  compiles.first_step_done()
  compiles.close()
  assert releaser_events == ['start', 'stop', 'start', 'stop', 'stop']
  assert [l.split(':')[0] for l in lines] == [
    'model init',
    'Compiling the training step; the first step includes it ...',
    'first step',
  ]
  assert set(compiles.as_dict()) == {'model_init', 'first_step'}
  assert compiles.as_dict()['model_init']['trace_s'] > 0


def test_runner_with_nothing_to_run_announces_no_compile(releaser_events):
  lines = []
  compiles = compile_watch.RunnerCompiles(cache_on=False, print_fn=lines.append)
  compiles.first_step(steps_to_run=False)
  compiles.close()
  assert lines == [] and compiles.as_dict() == {}
  assert releaser_events == ['start', 'stop']
