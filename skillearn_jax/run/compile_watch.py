"""Where the seconds before a run's first step go: tracing, lowering, XLA, cache.

This module owns `CompileWatch`, which listens to JAX's monitoring events
while a block runs (a runner wraps its model init and its first step in one)
and reports, as a `CompileReport`, the block's wall time, the wall time spent
tracing to jaxprs, lowering to StableHLO and in XLA (compiling, or loading
from the persistent compilation cache), how many programs that cache served
and stored, and the compile time it saved. Nested jits report nested spans,
so each phase counts the union of its spans: no second is counted twice.
It also owns `RunnerCompiles`, the search and evaluation runners' two
compiles (model init, first step), each watched, printed and wrapped in a
`host_memory.Releaser`. A second-order DARTS step spends minutes here on a
CPU (docs/performance.md): the report tells a user what the wait was and
whether the next run will skip it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any, Callable, NamedTuple

import jax

from skillearn_jax.run import host_memory

PHASE_EVENTS = {
  'trace': '/jax/core/compile/jaxpr_trace_duration',
  'lower': '/jax/core/compile/jaxpr_to_mlir_module_duration',
  'xla': '/jax/core/compile/backend_compile_duration',
}
_PHASE_OF_EVENT = {event: phase for phase, event in PHASE_EVENTS.items()}
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'
# JAX records this one when it writes a compiled program to the cache.
CACHE_STORE_EVENT = '/jax/compilation_cache/cache_misses'
CACHE_SAVED_EVENT = '/jax/compilation_cache/compile_time_saved_sec'


class CompileReport(NamedTuple):
  """Seconds and cache counts of one watched block."""

  wall_s: float
  trace_s: float
  lower_s: float
  xla_s: float
  cache_loaded: int
  cache_stored: int
  cache_saved_s: float

  def describe(self, what: str, cache_on: bool = True) -> str:
    """One console line, e.g. 'first step: 62.0 s (trace 9.8 s, ...)'."""
    phases = f'trace {self.trace_s:.1f} s, lower {self.lower_s:.1f} s, XLA {self.xla_s:.1f} s'
    cache = []
    if cache_on and self.cache_loaded:
      cache.append(
        f'{_programs(self.cache_loaded)} loaded ({self.cache_saved_s:.0f} s of compiling saved)'
      )
    if cache_on and self.cache_stored:
      cache.append(f'{_programs(self.cache_stored)} stored for the next run')
    cache_text = ', '.join(cache) if cache_on else 'off'
    return (
      f'{what}: {self.wall_s:.1f} s ({phases}; compilation cache: '
      f'{cache_text or "nothing loaded or stored"})'
    )


def _programs(count: int) -> str:
  return f'{count} program' + ('' if count == 1 else 's')


def union_seconds(spans) -> float:
  """Total length of the union of (start, end) intervals."""
  total, reach = 0.0, float('-inf')
  for start, end in sorted(spans):
    if end <= reach:
      continue
    total += end - max(start, reach)
    reach = end
  return total


class CompileWatch:
  """Collects JAX's compile events from `start()` (or `with`) to `stop()`.

  Listeners are process-wide, so events of any thread that compiles in the
  meantime are counted too; the runners compile on one thread.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._spans = {phase: [] for phase in PHASE_EVENTS}
    self._loaded = self._stored = 0
    self._saved_s = 0.0
    self._started = None
    self._wall_s = None

  # Listener signatures follow jax.monitoring's protocols.
  def _on_span(self, event, start_time, end_time, **kwargs):
    del kwargs
    phase = _PHASE_OF_EVENT.get(event)
    if phase is not None:
      with self._lock:
        self._spans[phase].append((start_time, end_time))

  def _on_event(self, event, **kwargs):
    del kwargs
    with self._lock:
      if event == CACHE_HIT_EVENT:
        self._loaded += 1
      elif event == CACHE_STORE_EVENT:
        self._stored += 1

  def _on_duration(self, event, duration_secs, **kwargs):
    del kwargs
    if event == CACHE_SAVED_EVENT:
      with self._lock:
        self._saved_s += max(0.0, float(duration_secs))

  def start(self) -> 'CompileWatch':
    if self._started is not None:
      raise RuntimeError('CompileWatch.start: already started')
    jax.monitoring.register_event_time_span_listener(self._on_span)
    jax.monitoring.register_event_listener(self._on_event)
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    self._started = time.perf_counter()
    return self

  def stop(self) -> CompileReport:
    """Stops listening (a second call only returns the report)."""
    if self._started is None:
      raise RuntimeError('CompileWatch.stop: never started')
    if self._wall_s is None:
      self._wall_s = time.perf_counter() - self._started
      jax.monitoring.unregister_event_time_span_listener(self._on_span)
      jax.monitoring.unregister_event_listener(self._on_event)
      jax.monitoring.unregister_event_duration_listener(self._on_duration)
    return self.report()

  def report(self) -> CompileReport:
    wall = self._wall_s if self._wall_s is not None else time.perf_counter() - self._started
    with self._lock:
      return CompileReport(
        wall_s=wall,
        trace_s=union_seconds(self._spans['trace']),
        lower_s=union_seconds(self._spans['lower']),
        xla_s=union_seconds(self._spans['xla']),
        cache_loaded=self._loaded,
        cache_stored=self._stored,
        cache_saved_s=self._saved_s,
      )

  def __enter__(self) -> 'CompileWatch':
    return self.start()

  def __exit__(self, *exc_info):
    self.stop()


class RunnerCompiles:
  """A runner's two compiles, its model init and its first step, watched.

  Each is also wrapped in a `host_memory.Releaser`, so the compiler's freed
  memory goes back to the OS while it compiles.
  `model_init()` is a context for building the model. `first_step()` is
  called before the loop, `first_step_done()` right after step one's timing
  and `close()` in the loop's `finally`. Each finished report is printed and
  kept in `reports` ('model_init', 'first_step'), which the runners write to
  summary.json.
  """

  def __init__(self, cache_on: bool, print_fn: Callable[[str], Any] | None = None):
    self.cache_on = cache_on
    self.print_fn = print_fn or functools.partial(print, flush=True)
    self.reports: dict[str, CompileReport] = {}
    self._release = None
    self._watch = None

  def _report(self, name: str, report: CompileReport, what: str) -> None:
    self.reports[name] = report
    self.print_fn(report.describe(what, self.cache_on))

  @contextlib.contextmanager
  def model_init(self):
    with host_memory.Releaser(), CompileWatch() as watch:
      yield
    self._report('model_init', watch.report(), 'model init')

  def first_step(self, steps_to_run: bool) -> None:
    self._release = host_memory.Releaser()
    self._watch = CompileWatch().start()
    if steps_to_run:
      self.print_fn('Compiling the training step; the first step includes it ...')

  def first_step_done(self) -> None:
    self._release.stop()
    self._report('first_step', self._watch.stop(), 'first step')

  def close(self) -> None:
    if self._release is not None:
      self._release.stop()
      self._watch.stop()

  def as_dict(self) -> dict:
    return {name: report._asdict() for name, report in self.reports.items()}
