"""Architecture evaluation: train a genotype's network from scratch, report test accuracy.

This module owns the evaluation experiment (`config.experiment = 'eval_cell'`): the CIFAR or
ImageNet network of `config.genotype` (built-in name or a search's genotype.json) trained by
plain supervised learning, not through the Skillearn engine, on the one training loop
(`run.loop`). One pure `train_step(state, batch, key, drop_path_prob)` does SGD with momentum,
coupled weight decay, gradient clipping and a per-epoch schedule (cosine or exponential decay)
on the cross entropy (optionally label smoothed) plus the weighted auxiliary-head loss, with
drop path ramped as prob · epoch / epochs; `eval_step` sums top-1 / top-5 hits on padded,
masked test batches. The run leaves genotype.json and the cell diagrams, per-step train
metrics, lr and drop_path_prob, per-epoch means and test metrics, and a summary with the final
test accuracy and the parameter count. Bad configs are refused before anything compiles,
naming the field and the allowed values (an unknown genotype lists the built-in names).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillearn_jax import config_check
from skillearn_jax.data import augment as augment_lib
from skillearn_jax.data import catalog
from skillearn_jax.data import stream as stream_lib
from skillearn_jax.nas import cell_plot
from skillearn_jax.nas import conv
from skillearn_jax.nas import eval_network
from skillearn_jax.nas import genotypes
from skillearn_jax.nas import ops
from skillearn_jax.skills import base
from skillearn_jax.skills import recipes

SCHEDULES = ('cosine', 'exponential')

# Pixels the networks divide the image side by before their cells (stems).
STEM_DOWNSAMPLING = {'cifar': 1, 'imagenet': 8}
AUXILIARY_POOL = 5  # the auxiliary head's average-pool window
EPOCH_MEANS = ('train/loss', 'train/accuracy')  # also logged as their per-epoch means
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


# -- checks ---------------------------------------------------------------------
def check_config(config) -> None:
  try:
    genotypes.resolve_genotype(config.genotype)
  except ValueError as error:
    raise config_check.ConfigError(f'config.genotype: {error}') from None
  config_check.one_of(config, 'net.network', tuple(eval_network.NETWORKS))
  config_check.one_of(config, 'net.conv_impl', conv.CONV_IMPLS)
  if 'precision' in config.net:
    config_check.one_of(config, 'net.precision', ops.PRECISIONS)
  config_check.one_of(config, 'optim.schedule', SCHEDULES)
  for field in (
    'data.batch_size',
    'data.eval_batch_size',
    'data.image_size',
    'data.resize_size',
    'net.layers',
    'net.channels',
    'optim.lr',
    'eval_every_epochs',
  ):
    config_check.positive(config, field)
  for field in (
    'data.train_examples',
    'data.eval_examples',
    'data.cutout_length',
    'net.auxiliary_weight',
    'optim.lr_min',
    'optim.decay_rate',
    'optim.momentum',
    'optim.weight_decay',
    'optim.clip',
  ):
    config_check.positive(config, field, allow_zero=True)
  config_check.in_unit_interval(config, 'net.drop_path_prob')
  config_check.in_unit_interval(config, 'label_smoothing')
  if config.data.image_size > config.data.resize_size:
    raise config_check.ConfigError(
      f'config.data.image_size: {config.data.image_size} is not allowed; '
      f'must be <= config.data.resize_size ({config.data.resize_size})'
    )


# -- the experiment --------------------------------------------------------------
def build(config) -> base.Experiment:
  """The evaluation of `config.genotype`'s network as the training loop runs it."""
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
  net = eval_network.make_eval_network(
    config.net.network,
    genotype,
    num_classes=info.num_classes,
    layers=config.net.layers,
    channels=config.net.channels,
    auxiliary=config.net.auxiliary_weight > 0,
    conv_impl=config.net.conv_impl,
    precision=config.net.get('precision', 'float32'),
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
  test_transform = augment_lib.eval_augment(
    data.test.info, image_size=d.image_size, resize_size=d.resize_size
  )
  steps_per_epoch = train_stream.steps_per_epoch
  schedule = learning_rate_schedule(config.optim, steps_per_epoch, config.num_epochs)
  tx = recipes.sgd_recipe(
    schedule,
    momentum=config.optim.momentum,
    weight_decay=config.optim.weight_decay,
    clip=config.optim.clip,
  )

  def drop_path_at(step):
    return drop_path_prob_at(step, steps_per_epoch, config.num_epochs, config.net.drop_path_prob)

  def step(state, batch, key):
    return train_step(
      state,
      batch,
      key,
      drop_path_at(state.step),
      auxiliary_weight=config.net.auxiliary_weight,
      label_smoothing=config.label_smoothing,
    )

  def test_metrics(totals) -> dict:
    count = max(float(totals['count']), 1.0)
    metrics = {
      'test/loss': float(totals['loss']) / count,
      'test/accuracy': float(totals['correct']) / count,
    }
    if data.test.info.num_classes > TOP5:
      metrics['test/top5_accuracy'] = float(totals['correct_top5']) / count
    return metrics

  def prepare_workdir(workdir):
    genotypes.save_genotype(genotype, os.path.join(workdir, 'genotype.json'))
    cell_plot.plot_genotype(genotype, os.path.join(workdir, 'plots'), prefix='cell_')

  def summary(state, last_metrics):
    main_params, _ = eval_network.split_auxiliary(jax.device_get(state.params))
    return {
      'genotype': config.genotype,
      'network': config.net.network,
      'dataset': d.name,
      'test_accuracy': last_metrics.get('test/accuracy'),
      'test_top5_accuracy': last_metrics.get('test/top5_accuracy'),
      # As the papers count it (RGB input, auxiliary head excluded) ...
      'params_m': eval_network.count_eval_params(
        genotype,
        config.net.network,
        num_classes=info.num_classes,
        layers=config.net.layers,
        channels=config.net.channels,
      )['params_m'],
      # ... and the network actually trained here (its input channels).
      'trained_params': ops.count_params(main_params),
    }

  return base.Experiment(
    init=lambda key: _init_state(net, tx, key, image_shape),
    step=step,
    batches_at=train_stream.batch_at,
    steps_per_epoch=steps_per_epoch,
    batch_size=d.batch_size,
    step_metrics=lambda step: {
      'lr': float(schedule(step)),
      'drop_path_prob': float(drop_path_at(step)),
    },
    eval_step=eval_step,
    eval_batches=lambda: stream_lib.eval_batches(
      data.test, test_indices, d.eval_batch_size, test_transform
    ),
    eval_metrics=test_metrics,
    epoch_means=EPOCH_MEANS,
    prepare_workdir=prepare_workdir,
    summary=summary,
  )
