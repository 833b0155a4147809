"""Architecture evaluation: train a genotype's network from scratch, report test accuracy.

This module owns an evaluation run in a workdir (`config.mode = 'evaluate'`): the CIFAR or
ImageNet network of `config.genotype` (built-in name or a search's genotype.json) trained by
plain supervised learning, not through the Skillearn engine. One pure jitted
`train_step(state, batch, key, drop_path_prob)` does SGD with momentum, coupled weight decay,
gradient clipping and a per-epoch schedule (cosine or exponential decay) on the cross entropy
(optionally label smoothed) plus the weighted auxiliary-head loss, with drop path ramped as
prob · epoch / epochs; `eval_step` sums top-1 / top-5 hits on padded, masked test batches.
The loop mirrors `run.search`: batches, drop-path keys, learning rate and drop-path
probability are pure functions of the step, so a resumed run repeats an uninterrupted one;
it leaves config.json, genotype.json, metrics.jsonl (per step: train loss / accuracy, lr,
drop_path_prob; per epoch: epoch means and test metrics), checkpoints, summary.json (final
test accuracy, parameter count, compile times) and plots (learning curves, the evaluated
cells).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillearn_jax.count_params import count_eval_params
from skillearn_jax.data import augment as augment_lib
from skillearn_jax.data import catalog
from skillearn_jax.data import stream as stream_lib
from skillearn_jax.nas import cell_plot
from skillearn_jax.nas import eval_network
from skillearn_jax.nas import genotypes
from skillearn_jax.nas import ops
from skillearn_jax.run import checkpoints
from skillearn_jax.run import compilation_cache
from skillearn_jax.run import compile_watch
from skillearn_jax.run import config_check
from skillearn_jax.run import plots
from skillearn_jax.run import progress as progress_lib
from skillearn_jax.run import resume_check
from skillearn_jax.run import search
from skillearn_jax.run import sharding
from skillearn_jax.run import writers
from skillearn_jax.skills import recipes

# Pixels the networks divide the image side by before their cells (stems).
STEM_DOWNSAMPLING = {'cifar': 1, 'imagenet': 8}
AUXILIARY_POOL = 5  # the auxiliary head's average-pool window
EPOCH_MEANS = ('train/loss', 'train/accuracy')
TOP5 = 5


class TrainState(train_state.TrainState):
  """flax's TrainState plus the networks' batch-norm statistics."""

  batch_stats: Any = None


# -- schedules -----------------------------------------------------------------
def learning_rate_schedule(optim, steps_per_epoch: int, num_epochs: int) -> optax.Schedule:
  """Per-epoch lr: 'cosine' from lr to lr_min over the run (DARTS CIFAR) or
  'exponential', lr · decay_rate^epoch (DARTS ImageNet)."""
  if optim.schedule == 'cosine':
    return recipes.per_epoch_cosine(optim.lr, optim.lr_min, num_epochs, steps_per_epoch)
  if optim.schedule == 'exponential':
    return optax.exponential_decay(
      optim.lr, transition_steps=steps_per_epoch, decay_rate=optim.decay_rate, staircase=True
    )
  raise config_check.ConfigError(
    f'config.optim.schedule: {optim.schedule!r} is not allowed; allowed: '
    "('cosine', 'exponential')"
  )


def drop_path_prob_at(step, steps_per_epoch: int, num_epochs: int, max_prob: float):
  """max_prob · epoch / num_epochs with epoch = step // steps_per_epoch (0-based, as the
  official code sets it at the start of each epoch); works on ints and traced arrays."""
  return max_prob * (step // steps_per_epoch) / num_epochs


# -- steps ---------------------------------------------------------------------
def classification_loss(logits, labels, label_smoothing: float = 0.0):
  """Mean cross entropy against one-hot labels smoothed to (1 - ε)·onehot + ε/K."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def train_step(
  state: TrainState, batch, key, drop_path_prob, *, auxiliary_weight: float, label_smoothing: float
):
  """One SGD step on loss(main) + auxiliary_weight · loss(auxiliary head)."""

  def loss_fn(params):
    (logits, aux_logits), updates = state.apply_fn(
      {'params': params, 'batch_stats': state.batch_stats},
      batch['image'],
      train=True,
      drop_path_prob=drop_path_prob,
      rngs={eval_network.DROP_PATH_RNG: key},
      mutable=['batch_stats'],
    )
    loss = classification_loss(logits, batch['label'], label_smoothing)
    metrics = {}
    if aux_logits is not None:
      aux_loss = classification_loss(aux_logits, batch['label'], label_smoothing)
      metrics['train/auxiliary_loss'] = aux_loss
      loss = loss + auxiliary_weight * aux_loss
    return loss, (logits, updates['batch_stats'], metrics)

  (loss, (logits, batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params
  )
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  metrics['train/loss'] = loss
  metrics['train/accuracy'] = jnp.mean(
    (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
  )
  return state, metrics


def eval_step(state: TrainState, batch) -> dict:
  """Sums over the batch's real (mask) examples: loss, top-1 and top-5 hits, count."""
  logits, _ = state.apply_fn(
    {'params': state.params, 'batch_stats': state.batch_stats}, batch['image'], train=False
  )
  mask = batch['mask'].astype(jnp.float32)
  labels = batch['label']
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  _, top = jax.lax.top_k(logits, min(TOP5, logits.shape[-1]))
  return {
    'loss': jnp.sum(loss * mask),
    'correct': jnp.sum((top[:, 0] == labels) * mask),
    'correct_top5': jnp.sum(jnp.any(top == labels[:, None], -1) * mask),
    'count': jnp.sum(mask),
  }


# -- setup ---------------------------------------------------------------------
def check_input_size(config, image_side: int) -> None:
  """Refuses images too small for the network's stems and reductions, or for the auxiliary
  head's 5x5 pooling, before anything compiles."""
  net = config.net
  cells_side = image_side // STEM_DOWNSAMPLING[net.network]
  final_side = cells_side // 2 ** len(eval_network.reduction_layers(net.layers))
  if final_side < 1:
    raise config_check.ConfigError(
      f'config.net.network: {net.network!r} downsamples {image_side}px images of '
      f'{config.data.name!r} below 1px; allowed here: the cifar network or larger images'
    )
  # The head reads cell 2·layers//3, after every reduction.
  if net.auxiliary_weight > 0 and final_side < AUXILIARY_POOL:
    raise config_check.ConfigError(
      f'config.net.auxiliary_weight: {net.auxiliary_weight!r} is not allowed for '
      f'{image_side}px images: the auxiliary head pools {AUXILIARY_POOL}x{AUXILIARY_POOL} '
      f'but gets {final_side}x{final_side}; use 0 (no auxiliary head)'
    )


def _first(count: int, limit: int) -> np.ndarray:
  return np.arange(min(count, limit) if limit > 0 else count)


def _init_state(net, tx, key, image_shape) -> TrainState:
  sample = jnp.zeros((2, *image_shape), jnp.float32)
  variables = jax.jit(functools.partial(net.init, train=False))(key, sample)
  return TrainState.create(
    apply_fn=net.apply, params=variables['params'], tx=tx, batch_stats=variables['batch_stats']
  )


def _test_metrics(eval_fn, state, data, indices, config, mesh) -> dict:
  d = config.data
  transform = augment_lib.eval_augment(
    data.test.info, image_size=d.image_size, resize_size=d.resize_size
  )
  totals = None
  for batch in stream_lib.eval_batches(data.test, indices, d.eval_batch_size, transform):
    sums = jax.device_get(eval_fn(state, sharding.shard_batch(batch, mesh)))
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
  count = max(float(totals['count']), 1.0)
  metrics = {
    'test/loss': float(totals['loss']) / count,
    'test/accuracy': float(totals['correct']) / count,
  }
  if data.test.info.num_classes > TOP5:
    metrics['test/top5_accuracy'] = float(totals['correct_top5']) / count
  return metrics


def _write_cell_artifacts(genotype, workdir: str) -> None:
  genotypes.save_genotype(genotype, os.path.join(workdir, 'genotype.json'))
  cell_plot.plot_genotype(genotype, os.path.join(workdir, 'plots'), prefix='cell_')


# -- the run -------------------------------------------------------------------
def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) `config.genotype`'s network in `workdir`; returns the summary."""
  config_check.check(config)
  genotype = genotypes.resolve_genotype(config.genotype)
  d = config.data
  data = catalog.evaluation_data(d.name, data_dir=d.data_dir or None)
  info = data.train.info
  image_shape = (
    (d.image_size, d.image_size, info.image_shape[2])
    if info.variable_size
    else tuple(info.image_shape)
  )
  check_input_size(config, image_shape[0])
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
    _write_cell_artifacts(genotype, workdir)

  net = eval_network.make_eval_network(
    config.net.network,
    genotype,
    num_classes=info.num_classes,
    layers=config.net.layers,
    channels=config.net.channels,
    auxiliary=config.net.auxiliary_weight > 0,
  )
  jitter = augment_lib.DARTS_IMAGENET_COLOR_JITTER if d.color_jitter else None
  train_stream = stream_lib.BatchStream(
    data.train,
    _first(len(data.train), d.train_examples),
    d.batch_size,
    config.seed,
    augment_lib.train_augment(
      info, cutout_length=d.cutout_length, color_jitter_strengths=jitter, image_size=d.image_size
    ),
  )
  test_indices = _first(len(data.test), d.eval_examples)
  steps_per_epoch = train_stream.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)

  schedule = learning_rate_schedule(config.optim, steps_per_epoch, config.num_epochs)
  tx = recipes.sgd_recipe(
    schedule,
    momentum=config.optim.momentum,
    weight_decay=config.optim.weight_decay,
    clip=config.optim.clip,
  )
  key = jax.random.key(config.seed, impl=config.rng_impl)
  compiles = compile_watch.RunnerCompiles(cache_on=cache_dir is not None)
  with compiles.model_init():
    state = _init_state(net, tx, jax.random.fold_in(key, 0), image_shape)

  epoch_sums = {name: 0.0 for name in EPOCH_MEANS}
  if start_step:
    state, extra = ckpt.restore(state, start_step)
    epoch_sums = dict(extra['epoch_sums'])
    logging.info('Resumed from step %d in %s', start_step, workdir)

  def drop_path_at(step):
    return drop_path_prob_at(step, steps_per_epoch, config.num_epochs, config.net.drop_path_prob)

  def scheduled_step(state, batch, step_key):
    return train_step(
      state,
      batch,
      step_key,
      drop_path_at(state.step),
      auxiliary_weight=config.net.auxiliary_weight,
      label_smoothing=config.label_smoothing,
    )

  mesh = sharding.make_mesh()
  state = sharding.replicate(state, mesh)
  step_fn = sharding.jit_data_parallel(scheduled_step, mesh, donate=True)
  eval_fn = jax.jit(
    eval_step,
    in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
    out_shardings=sharding.replicated(mesh),
  )
  writer = writers.MetricWriter(workdir, start_step=start_step)
  progress = progress_lib.Progress(
    total_steps, steps_per_epoch, start_step=start_step, batch_size=d.batch_size
  )
  dropout_key = jax.random.fold_in(key, 1)
  last_metrics: dict = {}

  def save(step):
    ckpt.save(step, state, {'epoch_sums': epoch_sums})

  compiles.first_step(steps_to_run=start_step < total_steps)
  try:
    batch = train_stream.batch_at(start_step) if start_step < total_steps else None
    for step in range(start_step, total_steps):
      t0 = time.perf_counter()
      new_state, metrics = step_fn(
        state, sharding.shard_batch(batch, mesh), jax.random.fold_in(dropout_key, step)
      )
      # Prepare the next batch on the host while the device works.
      batch = train_stream.batch_at(step + 1) if step + 1 < total_steps else None
      metrics = writers.scalar_metrics(metrics)
      search.check_finite(step, metrics)
      state = new_state
      done = step + 1
      epoch, position = divmod(step, steps_per_epoch)
      metrics.update(
        {
          'epoch': done / steps_per_epoch,
          'lr': float(schedule(step)),
          'drop_path_prob': float(drop_path_at(step)),
          'step_seconds': time.perf_counter() - t0,
        }
      )
      metrics['examples_per_second'] = d.batch_size / metrics['step_seconds']
      if step == start_step:  # after the timing, as in the search loop
        compiles.first_step_done()
      for name in EPOCH_MEANS:
        epoch_sums[name] += metrics[name]
      epoch_end = position + 1 == steps_per_epoch
      if epoch_end or done == total_steps:
        if (epoch + 1) % config.eval_every_epochs == 0 or done == total_steps:
          metrics.update(_test_metrics(eval_fn, state, data, test_indices, config, mesh))
        metrics.update(
          {
            name.replace('/', '/epoch_'): total / (position + 1)
            for name, total in epoch_sums.items()
          }
        )
        if epoch_end:
          epoch_sums = {name: 0.0 for name in EPOCH_MEANS}
      last_metrics = metrics
      if done % config.log_every_steps == 0 or epoch_end or done == total_steps:
        writer.write(done, metrics)
        progress.update(done, metrics, metrics['step_seconds'])
      if done % config.checkpoint_every_steps == 0 or epoch_end:
        save(done)
    end_step = max(total_steps, start_step)
    if ckpt.latest_step() != end_step:
      save(end_step)
  finally:
    compiles.close()
    writer.close()
    ckpt.close()

  metrics_path = os.path.join(workdir, writers.METRICS_FILE)
  if not last_metrics:  # nothing left to run: report the recorded end
    rows = writers.read_jsonl(metrics_path) if os.path.exists(metrics_path) else []
    last_metrics = {k: v for k, v in rows[-1].items() if k != 'step'} if rows else {}
  steps = int(jax.device_get(state.step))
  main_params, _ = eval_network.split_auxiliary(jax.device_get(state.params))
  summary = {
    'genotype': config.genotype,
    'network': config.net.network,
    'dataset': d.name,
    'steps': steps,
    'epochs': steps / steps_per_epoch,
    'test_accuracy': last_metrics.get('test/accuracy'),
    'test_top5_accuracy': last_metrics.get('test/top5_accuracy'),
    # As the papers count it (RGB input, auxiliary head excluded) ...
    'params_m': count_eval_params(
      genotype,
      config.net.network,
      num_classes=info.num_classes,
      layers=config.net.layers,
      channels=config.net.channels,
    )['params_m'],
    # ... and the network actually trained here (its input channels).
    'trained_params': ops.count_params(main_params),
    'final_metrics': last_metrics,
    # This process's model init and first step; a resumed run reports its own.
    'compile': compiles.as_dict(),
  }
  if primary:
    writers.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
    if os.path.exists(metrics_path) and writers.read_jsonl(metrics_path):
      plots.plot_learning_curves(
        metrics_path, os.path.join(workdir, 'plots', 'learning_curves.png')
      )
  return summary
