"""What the multi-task NAS skills (IL and its MTL baseline) share: tasks and learners.

This module owns the task list of a config (`parse_tasks`, `learner_labels`), one supernet and
one pair of search streams per task (`Learner`, `build_learners`), the shared encoder's init
with a head per task (`init_task_nets`), the weight parameter sets, summed task losses and
per-task eval-mode accuracies. IL and MTL import it, not each other.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax.core import unroll
from skillearn_jax.data import augment as augment_lib
from skillearn_jax.data import digits
from skillearn_jax.data import stream as stream_lib
from skillearn_jax.data.array_dir import PREFIX as ARRAY_DIR_PREFIX
from skillearn_jax.data.tfds_source import TFDS_DATASETS
from skillearn_jax.nas import ops
from skillearn_jax.skills import nas_search

ALPHAS = nas_search.ALPHAS
HEAD = 'classifier'  # the supernet's head; every other entry is the encoder


def parse_tasks(value, field: str) -> tuple[str, ...]:
  """Task names from 'a,b' or a sequence; a ConfigError names `field`."""
  if isinstance(value, str):
    names = tuple(t.strip() for t in value.split(',') if t.strip())
  else:
    names = tuple(value)
  known = (*digits.TASKS, *TFDS_DATASETS)
  for name in names:
    if not isinstance(name, str) or not (
      name in known or (name.startswith(ARRAY_DIR_PREFIX) and len(name) > len(ARRAY_DIR_PREFIX))
    ):
      raise config_check.ConfigError(
        f'config.{field}: unknown task {name!r}; allowed: {(*known, ARRAY_DIR_PREFIX + "PATH")}'
      )
  if len(names) < 2:
    raise config_check.ConfigError(
      f'config.{field}: {value!r} names {len(names)} task(s); at least 2 '
      'are needed (K >= 2), comma separated, e.g. "cifar100,cifar10"'
    )
  return names


def learner_labels(tasks: Sequence[str]) -> tuple[str, ...]:
  """One label per learner: its task name, numbered when a task repeats."""
  counts = collections.Counter(tasks)
  seen: collections.Counter = collections.Counter()
  labels = []
  for task in tasks:
    seen[task] += 1
    label = task if counts[task] == 1 else f'{task}_{seen[task]}'
    labels.append(label.replace(ARRAY_DIR_PREFIX, 'array_dir_'))
  return tuple(labels)


class Learner(NamedTuple):
  """One task's supernet and data: weight-half and validation-half streams."""

  label: str
  net: Any
  train_stream: stream_lib.BatchStream
  val_stream: stream_lib.BatchStream
  info: Any
  data: Any


def build_learners(config, tasks: Sequence[str], field: str) -> list[Learner]:
  """Per-task supernets (same encoder, own head size) and search streams."""
  learners = []
  for k, (task, label) in enumerate(zip(tasks, learner_labels(tasks))):
    train, val, info, data = nas_search.search_streams(config, dataset=task, seed_offset=k)
    learners.append(
      Learner(label, nas_search.make_supernet(config, info.num_classes), train, val, info, data)
    )
  shapes = {l.label: tuple(l.info.image_shape) for l in learners}
  if len(set(shapes.values())) > 1:
    raise config_check.ConfigError(
      f'config.{field}: the learners share one encoder, so their images '
      f'must have one shape; got {shapes}'
    )
  return learners


def steps_per_epoch(learners: Sequence[Learner]) -> int:
  return min(min(l.train_stream.steps_per_epoch, l.val_stream.steps_per_epoch) for l in learners)


def split_encoder_head(weights) -> tuple[dict, dict]:
  """A supernet's params as (encoder: everything but the head, head)."""
  encoder = {k: v for k, v in weights.items() if k != HEAD}
  return encoder, {HEAD: weights[HEAD]}


def init_task_nets(nets, key, image_shape):
  """(shared encoder init, per-task heads, alphas, BatchNorm stats).

  One supernet init, jitted (eager init of the supernet costs more than its
  compile), gives the encoder, statistics and the first head; the other
  heads are the same Dense layer sized to their tasks.
  """
  weights, alphas, stats = jax.jit(
    functools.partial(nas_search.init_supernet, nets[0], image_shape=tuple(image_shape))
  )(jax.random.fold_in(key, 0))
  encoder, first_head = split_encoder_head(weights)
  features = first_head[HEAD]['kernel'].shape[0]
  heads = [first_head]
  for k, net in enumerate(nets[1:], start=1):
    head = nn.Dense(net.num_classes, kernel_init=ops.TORCH_DEFAULT_INIT)
    heads.append(
      {HEAD: head.init(jax.random.fold_in(key, k), jnp.zeros((1, features), jnp.float32))['params']}
    )
  return encoder, heads, alphas, stats


def weight_sets(config, per_epoch: int):
  """(name -> weight ParamSet of the DARTS recipe, its lr schedule)."""
  make = lambda name: nas_search.weight_param_set(
    name, config.weights_optim, per_epoch, config.num_epochs
  )
  return lambda name: make(name)[0], make('weights')[1]


def fresh_copy(tree):
  """A copy with its own buffers, so one init can seed several sets even
  when the step donates its state."""
  return jax.tree_util.tree_map(jnp.copy, tree)


def summed_task_loss(
  losses: Mapping[str, core.LossFn], weights: Mapping[str, float]
) -> core.LossFn:
  """sum_k weights[k] * losses[k] over a batch keyed by the same labels.

  Model state flows through the terms in order (each updates only its own
  entry); metrics are reported per label.
  """

  def loss(params, batch, ctx):
    total, metrics, model_state = 0.0, {}, ctx.model_state
    for label, term in losses.items():
      out = unroll.as_output(term(params, batch[label], ctx._replace(model_state=model_state)))
      total = total + weights[label] * out.value
      if out.model_state is not None:
        model_state = out.model_state
      metrics[f'{label}/loss'] = out.value
      metrics.update({f'{label}/{k}': v for k, v in out.metrics.items()})
    return core.LossOutput(total, model_state=model_state, metrics=metrics)

  return loss


def task_accuracies(
  learners, models: Mapping[str, Mapping[str, tuple]], alphas, config, applies, step=0
) -> dict:
  """Eval-mode accuracy of each model on its learner's validation half.

  `models[label]` maps metric names to (params, batch_stats) of learner
  `label`'s models; `applies` are the learners' `nas_search.eval_apply`; `step` sets the
  space's per-step values (DARTS-' auxiliary coefficient).
  """
  variant = nas_search.variant_values(config, steps_per_epoch(learners))
  values = variant and variant(step, None)
  metrics = {}
  for learner, apply in zip(learners, applies):
    indices = learner.data.architecture_indices[: config.data.eval_examples]
    if not len(indices):
      continue
    batches = list(
      stream_lib.eval_batches(
        learner.data.source, indices, config.data.batch_size, augment_lib.eval_augment(learner.info)
      )
    )
    for metric, (params, stats) in models[learner.label].items():
      metrics[metric] = nas_search.accuracy_on(
        learner.net,
        lambda p=params, s=stats: {'params': p, 'batch_stats': s},
        alphas,
        batches,
        apply=apply,
        variant=values,
      )
  return metrics
