"""The one training loop: every experiment, search or evaluation, runs through it.

This module owns a run in a workdir (`train_and_evaluate(config, workdir, experiment)`): it
restores the last checkpoint when there is one (refusing one of another config:
`resume_check`), jits the experiment's pure step data parallel over the local devices, feeds
it the batches of each step (the next one sent to the devices while a step runs), reads the
metrics back only at log, checkpoint and epoch-end steps (a GPU never waits on the host in
between), stops loudly on a non-finite metric, naming the first step that had one, evaluates and describes the
state at epoch ends, logs metrics (metrics.jsonl, TensorBoard, progress lines), checkpoints,
reports what the model init and the first step spent compiling (`compile_watch`), and writes
summary.json (with the run's cost: wall seconds and devices) and the learning curves once, at
the end. One seeding convention: the root key is `jax.random.key(config.seed,
impl=config.rng_impl)`; the init folds in 0, step s folds in 1 then s. Batches and keys are pure functions of the step, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax

from skillearn_jax.run import checkpoints
from skillearn_jax.run import compile_watch
from skillearn_jax.run import plots
from skillearn_jax.run import progress as progress_lib
from skillearn_jax.run import resume_check
from skillearn_jax.run import sharding
from skillearn_jax.run import writers
from skillearn_jax.skills import base


class NonFiniteError(FloatingPointError):
  """A loss or hypergradient became NaN or infinite."""


def root_key(config) -> jax.Array:
  """The run's root key; the init takes `fold_in(root, 0)`, step s `fold_in(fold_in(root, 1),
  s)`."""
  return jax.random.key(config.seed, impl=config.rng_impl)


def check_finite(step: int, metrics, kept: str = '') -> None:
  """Raises NonFiniteError naming the step, the stage, the quantity and `kept`, what the
  workdir holds to go back to (see `_kept`)."""
  for name in sorted(metrics):
    value = float(metrics[name])
    if not math.isfinite(value):
      stage, _, quantity = name.partition('/')
      if stage == 'hypergrad':
        stage, quantity = 'validation', f'hypergradient of {quantity}'
      elif stage == 'val':
        stage = 'validation'
      raise NonFiniteError(
        f'non-finite value at step {step}: stage {stage!r}, quantity '
        f'{quantity!r} = {value}. {kept or "Nothing was saved."} Lower the learning rates '
        'or check the data.'
      )


def _kept(ckpt: checkpoints.Checkpointer) -> str:
  latest = ckpt.latest_step()
  if latest is None:
    return 'No checkpoint exists yet.'
  return f'The last checkpoint, step {latest}, is kept in {ckpt.directory}.'


def record_snapshot(history: list, epoch: int, step: int, describe) -> list:
  """`history` with the snapshot of `epoch` taken at `step`.

  A run stopped mid-epoch (`max_steps`) records where it stopped; resumed,
  it replaces that snapshot at the epoch's end, so its history (the alpha
  heatmaps' columns) equals an uninterrupted run's.
  """
  if history and history[-1]['epoch'] == epoch:
    history = history[:-1]
  return history + [{'epoch': epoch, 'step': step, 'describe': describe}]


def total_steps(config, steps_per_epoch: int) -> int:
  total = config.num_epochs * steps_per_epoch
  return min(total, config.max_steps) if config.max_steps > 0 else total


def _held_out(experiment: base.Experiment, eval_fn, state, mesh) -> dict:
  metrics = dict(experiment.evaluate(state)) if experiment.evaluate else {}
  if experiment.eval_step:
    totals = None
    for batch in experiment.eval_batches():
      sums = jax.device_get(eval_fn(state, sharding.shard_batch(batch, mesh)))
      totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
    metrics.update(experiment.eval_metrics(totals))
  return metrics


def _recorded_end(metrics_path: str) -> dict:
  """The last logged metrics of a run with nothing left to run."""
  rows = writers.read_jsonl(metrics_path) if os.path.exists(metrics_path) else []
  return {k: v for k, v in rows[-1].items() if k != 'step'} if rows else {}


def _finished(config, workdir: str, steps_per_epoch: int, ckpt) -> dict | None:
  """The recorded summary of a run that has nothing left to do under `config` (its summary
  says complete, and its newest checkpoint is the summary's step), else None."""
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  steps = summary.get('steps')
  if not summary.get('complete') or steps != ckpt.latest_step():
    return None
  planned = config.num_epochs * steps_per_epoch
  return summary if summary.get('stopped') or steps >= planned else None


def train_and_evaluate(
  config, workdir: str, experiment: base.Experiment, *, cache_on: bool = False
) -> dict:
  """Runs (or resumes) `experiment` in `workdir`; returns the summary."""
  exp = experiment
  began = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoints.Checkpointer(
    os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints
  )
  resume_check.check_same_run(config, workdir, resuming=ckpt.latest_step() is not None)
  finished = _finished(config, workdir, exp.steps_per_epoch, ckpt)
  if finished:
    ckpt.close()
    planned = total_steps(config, exp.steps_per_epoch)
    print(f"already complete: {finished['steps']} of {planned} steps in {workdir}; nothing changed")
    print(closing(finished, workdir, exp.progress_metrics or progress_lib.DEFAULT_FIRST))
    return finished
  primary = jax.process_index() == 0  # one writer when several hosts run
  if primary:
    writers.write_json_atomic(os.path.join(workdir, 'config.json'), config.to_dict())
    if exp.prepare_workdir:
      exp.prepare_workdir(workdir)
  key = root_key(config)
  compiles = compile_watch.RunnerCompiles(cache_on=cache_on)
  with compiles.model_init():
    state = exp.init(jax.random.fold_in(key, 0))

  steps_per_epoch = exp.steps_per_epoch
  last_step = total_steps(config, steps_per_epoch)
  history: list = []
  epoch_sums = {name: 0.0 for name in exp.epoch_means}
  stopped = None  # {'reason', 'epoch', 'step'} once `should_stop` says so
  restored = ckpt.restore_newest(state)
  start_step = 0
  if restored:
    start_step, state, extra = restored
    history = list(extra.get('history', []))
    epoch_sums = dict(extra.get('epoch_sums', epoch_sums))
    stopped = extra.get('stopped')
  # Seconds spent up to the restored checkpoint by the processes before this one.
  spent_before = float(extra.get('train_s', 0.0)) if start_step else 0.0
  spent = spent_before
  if stopped:
    last_step = start_step
    print(f"stopped early at epoch {stopped['epoch']}: {stopped['reason']}", flush=True)
  elif start_step >= last_step:
    print(f'already complete: {start_step} of {last_step} steps in {workdir}', flush=True)
  elif start_step:
    print(f'resumed from step {start_step} of {last_step} in {workdir}', flush=True)

  mesh = sharding.make_mesh()
  state = sharding.replicate(state, mesh)
  step_fn = sharding.jit_data_parallel(exp.step, mesh, donate=True)
  eval_fn = exp.eval_step and jax.jit(
    exp.eval_step,
    in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
    out_shardings=sharding.replicated(mesh),
  )
  eval_every = config.get('eval_every_epochs', 1)
  # start_step drops log lines and TensorBoard events written after the
  # checkpoint, so a resumed run's logs equal an uninterrupted run's.
  writer = writers.MetricWriter(workdir, start_step=start_step)
  progress = progress_lib.Progress(
    last_step,
    steps_per_epoch,
    start_step=start_step,
    batch_size=exp.batch_size,
    first=exp.progress_metrics or progress_lib.DEFAULT_FIRST,
  )
  step_key = jax.random.fold_in(key, 1)
  last_metrics: dict = {}

  def save(step):
    nonlocal spent
    spent = spent_before + time.perf_counter() - began
    extra = {'train_s': spent}
    if exp.describe:
      extra['history'] = history
    if exp.epoch_means:
      extra['epoch_sums'] = epoch_sums
    if stopped:
      extra['stopped'] = stopped
    ckpt.save(step, state, extra)

  def next_batch(step):
    return sharding.shard_batch(exp.batches_at(step), mesh) if step < last_step else None

  compiles.first_step(steps_to_run=start_step < last_step)
  try:
    batch = next_batch(start_step)
    pending = []  # (step, metrics still on the devices) since the last read
    t0 = time.perf_counter()
    for step in range(start_step, last_step):
      state, device_metrics = step_fn(state, batch, jax.random.fold_in(step_key, step))
      # The next batch is made on the host and sent while the devices run this step.
      batch = next_batch(step + 1)
      pending.append((step, device_metrics))
      done = step + 1
      epoch, position = divmod(step, steps_per_epoch)
      epoch_end = position + 1 == steps_per_epoch
      log_now = done % config.log_every_steps == 0 or epoch_end or done == last_step
      save_now = done % config.checkpoint_every_steps == 0 or epoch_end
      if not (log_now or save_now or step == start_step):
        continue
      # One read of every pending step's metrics, checked in step order before any save.
      for (pending_step, _), values in zip(pending, jax.device_get([m for _, m in pending])):
        metrics = writers.scalar_metrics(values)
        check_finite(pending_step + 1, metrics, _kept(ckpt))  # counted as progress lines count
        for name in exp.epoch_means:
          epoch_sums[name] += (
            metrics[name] if name in metrics else exp.step_metrics(pending_step)[name]
          )
      # the mean step time since the last read (the first step's alone: its compile)
      seconds = (time.perf_counter() - t0) / len(pending)
      pending = []
      if step == start_step:
        compiles.first_step_done()
      metrics['epoch'] = done / steps_per_epoch
      metrics['step_seconds'] = seconds
      if exp.batch_size:
        metrics['examples_per_second'] = exp.batch_size / seconds
      if exp.step_metrics:
        metrics.update(exp.step_metrics(step))
      if epoch_end or done == last_step:
        if (epoch + 1) % eval_every == 0 or done == last_step:
          metrics.update(_held_out(exp, eval_fn, state, mesh))
        metrics.update(
          {
            name.replace('/', '/epoch_'): total / (position + 1)
            for name, total in epoch_sums.items()
          }
        )
        if epoch_end:
          epoch_sums = {name: 0.0 for name in exp.epoch_means}
        if exp.describe:
          history = record_snapshot(
            history, math.ceil(done / steps_per_epoch), done, exp.describe(state)
          )
          if exp.write_artifacts and primary:
            exp.write_artifacts(state, workdir, history)
        reason = exp.should_stop(history) if exp.should_stop and epoch_end else None
        if reason:
          stopped = {'reason': reason, 'epoch': epoch + 1, 'step': done}
      last_metrics = metrics
      if log_now:
        writer.write(done, metrics)
        progress.update(done, metrics, seconds)
      if save_now:
        save(done)
      t0 = time.perf_counter()  # evaluations, logs and saves are no step's time
      if stopped:
        print(f'stopping early at epoch {epoch + 1} (step {done}): {reason}', flush=True)
        last_step = done
        break
    end_step = max(last_step, start_step)
    if ckpt.latest_step() != end_step:
      save(end_step)
  finally:
    compiles.close()
    writer.close()
    ckpt.close()

  metrics_path = os.path.join(workdir, writers.METRICS_FILE)
  last_metrics = last_metrics or _recorded_end(metrics_path)
  steps = int(jax.device_get(state.step))
  summary = {'steps': steps, 'epochs': steps / steps_per_epoch}
  # Every planned step ran (max_steps aside) or the run stopped early: nothing left to do.
  summary['complete'] = bool(stopped) or steps >= config.num_epochs * steps_per_epoch
  if exp.summary:
    summary.update(exp.summary(state, last_metrics))
  summary['final_metrics'] = last_metrics
  if stopped:
    summary['stopped'] = stopped
  # This process's model init and first step; a resumed run reports its own.
  summary['compile'] = compiles.as_dict()
  summary['cost'] = run_cost(spent)
  if primary:
    if exp.write_artifacts and not history:
      exp.write_artifacts(state, workdir, history)
    writers.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
    if os.path.exists(metrics_path) and writers.read_jsonl(metrics_path):
      os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
      plots.plot_learning_curves(
        metrics_path, os.path.join(workdir, 'plots', 'learning_curves.png')
      )
    print(closing(summary, workdir, exp.progress_metrics or progress_lib.DEFAULT_FIRST))
  return summary


def run_cost(train_s: float) -> dict:
  """What the run cost: wall seconds from the start of each process (init and compiles
  included) to its last checkpoint, summed over the processes that led to the final one, and
  the devices they ran on (the table's search cost, GPU-days = train_s * devices / 86400)."""
  device = jax.devices()[0]
  return {
    'train_s': round(train_s, 3),
    'platform': device.platform,
    'device_kind': device.device_kind,
    'devices': jax.device_count(),
  }


def closing(summary: dict, workdir: str, first) -> str:
  """The run's last words: steps, the main metrics, what was learned, where the files are."""
  lines = [f"done: {summary['steps']} steps ({summary['epochs']:g} epochs)"]
  shown = progress_lib.reported_metrics(summary['final_metrics'], 6, first)
  if shown:
    lines.append('  ' + ', '.join(f'{name} {value:.4g}' for name, value in shown))
  genotype = (summary.get('describe') or {}).get('genotype')
  if genotype:
    lines.append(f"  genotype: normal {genotype['normal']}, reduce {genotype['reduce']}")
  files = [
    name
    for name in ('summary.json', 'metrics.jsonl', 'genotype.json', 'plots')
    if os.path.exists(os.path.join(workdir, name))
  ]
  lines.append(f"  in {workdir}: {', '.join(files)}")
  return '\n'.join(lines)
