"""The training loop of any Skillearn program: `train_and_evaluate`.

Owns one run in a workdir: it builds the skill's program, restores the last
checkpoint when there is one (refusing one of another config:
`resume_check`), runs the engine's jitted step over the skill's batches
(data parallel over local devices), stops loudly on a non-finite loss or
hypergradient, and leaves behind config.json, metrics.jsonl,
TensorBoard events, checkpoints, the skill's artifacts (genotype, plots),
learning curves and summary.json. It prints what the model init and the first
step spent tracing, lowering and compiling (`compile_watch`). Batches and keys
are pure functions of the step, so a resumed run repeats an uninterrupted one
exactly.
"""

from __future__ import annotations

import math
import os
import time

from absl import logging
import jax

from skillearn_jax import core
from skillearn_jax import skills
from skillearn_jax.run import checkpoints
from skillearn_jax.run import compilation_cache
from skillearn_jax.run import compile_watch
from skillearn_jax.run import config_check
from skillearn_jax.run import options
from skillearn_jax.run import plots
from skillearn_jax.run import progress as progress_lib
from skillearn_jax.run import resume_check
from skillearn_jax.run import sharding
from skillearn_jax.run import writers


class NonFiniteError(FloatingPointError):
  """A loss or hypergradient became NaN or infinite."""


def check_finite(step: int, metrics) -> None:
  """Raises NonFiniteError naming the step, the stage and the quantity."""
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
        f'{quantity!r} = {value}. The last good checkpoint is kept; lower '
        'the learning rates or check the data.'
      )


def _total_steps(config, steps_per_epoch: int) -> int:
  total = config.num_epochs * steps_per_epoch
  return min(total, config.max_steps) if config.max_steps > 0 else total


def record_snapshot(history: list, epoch: int, step: int, describe) -> list:
  """`history` with the snapshot of `epoch` taken at `step`.

  A run stopped mid-epoch (`max_steps`) records where it stopped; resumed,
  it replaces that snapshot at the epoch's end, so its history (the alpha
  heatmaps' columns) equals an uninterrupted run's.
  """
  if history and history[-1]['epoch'] == epoch:
    history = history[:-1]
  return history + [{'epoch': epoch, 'step': step, 'describe': describe}]


def _host_metrics(metrics) -> dict:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) the program of `config` in `workdir`; returns summary."""
  config_check.check(config)
  cache_dir = compilation_cache.enable(config.compilation_cache_dir)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoints.Checkpointer(
    os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints
  )
  start_step = ckpt.latest_step() or 0
  resume_check.check_same_run(config, workdir, resuming=start_step > 0)
  primary = jax.process_index() == 0  # one writer when several hosts run
  if primary:
    writers.write_json_atomic(os.path.join(workdir, 'config.json'), config.to_dict())
  setup = skills.build(config)
  program = setup.program
  key = jax.random.PRNGKey(config.seed)
  compiles = compile_watch.RunnerCompiles(cache_on=cache_dir is not None)
  with compiles.model_init():
    params, model_state = setup.init(jax.random.fold_in(key, 0))
    state = core.init_state(program, params, model_state)

  steps_per_epoch = setup.steps_per_epoch
  total_steps = _total_steps(config, steps_per_epoch)
  history: list = []
  if start_step:
    state, extra = ckpt.restore(state, start_step)
    history = list(extra.get('history', []))
    logging.info('Resumed from step %d in %s', start_step, workdir)

  mesh = sharding.make_mesh()
  state = sharding.replicate(state, mesh)
  step_fn = sharding.jit_data_parallel(
    core.make_step(
      program,
      method=config.hypergradient,
      order=config.order,
      options=options.hypergradient_options(config),
      jit=False,
    ),
    mesh,
    donate=True,
  )
  # start_step drops log lines and TensorBoard events written after the
  # checkpoint, so a resumed run's logs equal an uninterrupted run's.
  writer = writers.MetricWriter(workdir, start_step=start_step)
  batch_size = config.data.batch_size if 'data' in config else None
  progress = progress_lib.Progress(
    total_steps, steps_per_epoch, start_step=start_step, batch_size=batch_size
  )
  step_key = jax.random.fold_in(key, 1)
  last_metrics: dict = {}

  def save(step):
    ckpt.save(step, state, {'history': history})

  compiles.first_step(steps_to_run=start_step < total_steps)
  try:
    batches = setup.batches_at(start_step) if start_step < total_steps else None
    for step in range(start_step, total_steps):
      t0 = time.perf_counter()
      new_state, metrics = step_fn(
        state, sharding.shard_batch(batches, mesh), jax.random.fold_in(step_key, step)
      )
      # Prepare the next batch on the host while the device works.
      batches = setup.batches_at(step + 1) if step + 1 < total_steps else None
      metrics = _host_metrics(metrics)
      check_finite(step, metrics)
      state = new_state
      seconds = time.perf_counter() - t0
      if step == start_step:
        compiles.first_step_done()
      done = step + 1
      epoch_end = done % steps_per_epoch == 0
      metrics['epoch'] = done / steps_per_epoch
      metrics['step_seconds'] = seconds
      if batch_size:
        metrics['examples_per_second'] = batch_size / seconds
      if setup.learning_rates:
        metrics.update(setup.learning_rates(step))
      if epoch_end or done == total_steps:
        if setup.evaluate:
          metrics.update({f'eval/{k}': v for k, v in setup.evaluate(state).items()})
        if setup.describe:
          history = record_snapshot(
            history, math.ceil(done / steps_per_epoch), done, setup.describe(state)
          )
          if setup.write_artifacts and primary:
            setup.write_artifacts(state, workdir, history)
      last_metrics = metrics
      if done % config.log_every_steps == 0 or epoch_end or done == total_steps:
        writer.write(done, metrics)
        progress.update(done, metrics, seconds)
      if done % config.checkpoint_every_steps == 0 or epoch_end:
        save(done)
    end_step = max(total_steps, start_step)
    if ckpt.latest_step() != end_step:
      save(end_step)
  finally:
    compiles.close()
    writer.close()
    ckpt.close()

  if not last_metrics:  # nothing left to run: report the recorded end
    rows = writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
    last_metrics = {k: v for k, v in rows[-1].items() if k != 'step'} if rows else {}
  summary = {
    'steps': int(jax.device_get(state.step)),
    'epochs': int(jax.device_get(state.step)) / steps_per_epoch,
    'final_metrics': last_metrics,
    'describe': setup.describe(state) if setup.describe else None,
    # This process's model init and first step; a resumed run reports its own.
    'compile': compiles.as_dict(),
  }
  if primary:
    if setup.write_artifacts and not history:
      setup.write_artifacts(state, workdir, history)
    writers.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
    metrics_path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(metrics_path) and writers.read_jsonl(metrics_path):
      os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
      plots.plot_learning_curves(
        metrics_path, os.path.join(workdir, 'plots', 'learning_curves.png')
      )
  return summary
