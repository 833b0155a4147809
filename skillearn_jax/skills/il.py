"""Interleaving Learning (IL) for architecture search as a Skillearn program.

K learners, each with its own task (training and validation data, a linear
head sized to its label space), train data encoders that share one
architecture A (the DARTS alphas) in M rounds, in the order l1..lK of round
1, l1..lK of round 2, ... (Skillearn Eq. 32; IL paper Eq. 5). Following the
papers, every round has its own parameters: stage (m, k) learns encoder
weights W_k^(m) and head H_k^(m) on learner k's training data, with
lambda * ||W_k^(m) - W~_prev||^2 tying it to the unrolled encoder of the
previous stage (learner K of round m-1 precedes learner 1 of round m; the
very first stage has no interaction). The validation stage minimizes
sum_k L(A, W~_k^(M), H~_k^(M), D_k^val) over A and sees only the final
round's solutions (the heads of earlier rounds are discarded, as the papers
say). The engine differentiates through the whole chain. This module also
owns the multi-task pieces the MTL baseline reuses: task lists, per-task
supernets and streams, summed task losses and per-task evaluation.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from skillearn_jax import core
from skillearn_jax.core import unroll
from skillearn_jax.data import augment as augment_lib
from skillearn_jax.data import digits
from skillearn_jax.data import stream as stream_lib
from skillearn_jax.data.array_dir import PREFIX as ARRAY_DIR_PREFIX
from skillearn_jax.data.tfds_source import TFDS_DATASETS
from skillearn_jax.nas import ops
from skillearn_jax.run import config_check
from skillearn_jax.skills import base
from skillearn_jax.skills import darts

ALPHAS = darts.ALPHAS
HEAD = 'classifier'  # the supernet's head; every other entry is the encoder


# -- tasks and learners (shared with the multi-task baseline) -----------------
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
    train, val, info, data = darts.search_streams(config, dataset=task, seed_offset=k)
    learners.append(
      Learner(label, darts.make_supernet(config.net, info.num_classes), train, val, info, data)
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


def init_task_nets(nets, key, image_shape, nodes: int):
  """(shared encoder init, per-task heads, alphas, BatchNorm stats).

  One supernet init, jitted (eager init of the supernet costs more than its
  compile), gives the encoder, statistics and the first head; the other
  heads are the same Dense layer sized to their tasks.
  """
  weights, alphas, stats = jax.jit(
    functools.partial(darts.init_supernet, nets[0], image_shape=tuple(image_shape), nodes=nodes)
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
  make = lambda name: darts.weight_param_set(
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
  learners, models: Mapping[str, Mapping[str, tuple]], alphas, config, applies
) -> dict:
  """Eval-mode accuracy of each model on its learner's validation half.

  `models[label]` maps metric names to (params, batch_stats) of learner
  `label`'s models; `applies` are the learners' `darts.eval_apply`.
  """
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
      metrics[metric] = darts.accuracy_on(
        learner.net,
        lambda p=params, s=stats: {'params': p, 'batch_stats': s},
        alphas,
        batches,
        apply=apply,
      )
  return metrics


def alphas_search_setup(
  config, *, program, init, batches_at, per_epoch, schedule, evaluate
) -> base.SkillSetup:
  """The SkillSetup of a search whose outcome is the DARTS alphas: genotype
  description, genotype/alpha plots and the logged learning rates."""
  return base.SkillSetup(
    program=program,
    init=init,
    batches_at=batches_at,
    steps_per_epoch=per_epoch,
    describe=lambda state: darts.describe_alphas(state.params[ALPHAS], config.net),
    write_artifacts=lambda state, workdir, history: darts.write_search_artifacts(
      state.params[ALPHAS], config.net, workdir, history
    ),
    evaluate=evaluate,
    learning_rates=lambda step: {
      'lr/weights': float(schedule(step)),
      'lr/alphas': config.alphas_optim.lr,
    },
  )


# -- the interleaving program ------------------------------------------------
def stage_name(round_index: int, label: str) -> str:
  """Stage (and model-state entry) of learner `label` in round m (1-based)."""
  return f'round{round_index}/{label}'


def encoder_set(stage: str) -> str:
  return f'{stage}/encoder'


def head_set(stage: str) -> str:
  return f'{stage}/head'


def squared_distance(a, b) -> jax.Array:
  """||a - b||^2 summed over every leaf of two pytrees of one structure."""
  return sum(
    jnp.sum(jnp.square(x - y))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def encoder_interaction(current: str, previous: str) -> core.LossFn:
  """||W_current - W~_previous||^2; the stage's gamma carries lambda."""
  return lambda params, batch, ctx: squared_distance(params[current], params[previous])


def stage_order(labels: Sequence[str], rounds: int) -> list[str]:
  """Stage names in the interleaving order l1..lK, l1..lK, ... (M rounds)."""
  return [stage_name(m, label) for m in range(1, rounds + 1) for label in labels]


def il_program(
  labels: Sequence[str],
  rounds: int,
  lam: float,
  *,
  learner_loss: Callable[[int, str], core.LossFn],
  weight_set: Callable[[str], core.ParamSet],
  arch_set: core.ParamSet,
) -> core.Program:
  """The IL program of Eq. 32 for any learner loss.

  `learner_loss(k, stage)` is learner k's loss reading the sets
  `encoder_set(stage)`, `head_set(stage)` and `arch_set.name`, and model
  state entry `stage`; `weight_set(name)` makes the ParamSet of an encoder
  or head set.
  """
  param_sets, stages = [arch_set], []
  previous = None
  for m in range(1, rounds + 1):
    for k, label in enumerate(labels):
      stage = stage_name(m, label)
      param_sets += [weight_set(encoder_set(stage)), weight_set(head_set(stage))]
      tie = (
        {}
        if previous is None
        else dict(
          uses=[previous],
          gamma=lam,
          interaction=encoder_interaction(encoder_set(stage), encoder_set(previous)),
        )
      )
      stages.append(
        core.Stage(
          stage,
          active=[encoder_set(stage), head_set(stage)],
          supporting=[arch_set.name],
          loss=learner_loss(k, stage),
          data=f'train/{label}',
          **tie,
        )
      )
      previous = stage
  final = [stage_name(rounds, label) for label in labels]
  validation = core.Validation(
    summed_task_loss(
      {label: learner_loss(k, stage) for k, (label, stage) in enumerate(zip(labels, final))},
      {label: 1.0 for label in labels},
    ),
    {arch_set.name: 'minimize'},
    data='val',
    uses=final,
  )
  return core.Program(param_sets, stages, validation)


# -- the skill ----------------------------------------------------------------
def check_config(config) -> None:
  darts.check_config(config)
  parse_tasks(config.il.tasks, 'il.tasks')
  config_check.positive(config, 'il.rounds')
  config_check.positive(config, 'il.lam', allow_zero=True)


def chain_amplification_warning(config, num_learners: int) -> str | None:
  """A warning when finite differences meet a chain that amplifies.

  Each stage's one-step solution carries (1 - 2 eta lambda) times the
  previous stage's encoder, so sensitivities grow by that factor per stage;
  past 1 in size, the finite-difference hypergradient stops tracking the
  exact one (README, "The cost of interleaving learning").
  """
  stages = int(config.il.rounds) * num_learners
  factor = 1.0 - 2.0 * config.weights_optim.lr * config.il.lam
  if config.hypergradient != 'finite_difference' or stages < 2 or abs(factor) <= 1.0:
    return None
  return (
    f'interleaving learning: each of the {stages} stages multiplies '
    f'the previous encoder by 1 - 2 * weights_optim.lr * il.lam = '
    f'{factor:g}, so finite-difference hypergradients drift from the '
    'exact ones (cosine -0.03 on configs/il_darts.py:quick); consider '
    '--config.hypergradient=exact or a smaller --config.il.lam'
  )


def supernet_program(nets, labels, config, per_epoch: int):
  """The IL program of `config` over one supernet per learner; returns
  (program, weight lr schedule)."""
  weight_set, schedule = weight_sets(config, per_epoch)
  program = il_program(
    labels,
    int(config.il.rounds),
    float(config.il.lam),
    learner_loss=lambda k, stage: darts.classification_loss(
      nets[k], weights=(encoder_set(stage), head_set(stage)), alphas=ALPHAS, stats=stage
    ),
    weight_set=weight_set,
    arch_set=darts.arch_param_set(ALPHAS, config.alphas_optim),
  )
  return program, schedule


def init_supernet_params(nets, labels, rounds: int, key, image_shape, nodes: int):
  """(params, model_state) of every stage: every encoder starts from one
  init (as if each learner passed its encoder on), each head from its
  task's init, each stage with its own BatchNorm statistics."""
  encoder, heads, alphas, stats = init_task_nets(nets, key, image_shape, nodes)
  params, model_state = {ALPHAS: alphas}, {}
  for i, stage in enumerate(stage_order(labels, rounds)):
    params[encoder_set(stage)] = fresh_copy(encoder)
    params[head_set(stage)] = fresh_copy(heads[i % len(labels)])
    model_state[stage] = fresh_copy(stats)
  return params, model_state


def build(config) -> base.SkillSetup:
  tasks = parse_tasks(config.il.tasks, 'il.tasks')
  learners = build_learners(config, tasks, 'il.tasks')
  labels = [l.label for l in learners]
  nets = [l.net for l in learners]
  rounds = int(config.il.rounds)
  per_epoch = steps_per_epoch(learners)
  program, schedule = supernet_program(nets, labels, config, per_epoch)
  warning = chain_amplification_warning(config, len(learners))
  if warning:
    logging.warning(warning)

  def init(key):
    return init_supernet_params(
      nets, labels, rounds, key, learners[0].info.image_shape, config.net.nodes
    )

  def batches_at(step):
    batches = {f'train/{l.label}': l.train_stream.batch_at(step) for l in learners}
    batches['val'] = {l.label: l.val_stream.batch_at(step) for l in learners}
    return batches

  applies = [darts.eval_apply(l.net) for l in learners]

  def evaluate(state):
    models = {
      label: {
        f'{stage}_accuracy': (
          darts.merged_params(state.params, (encoder_set(stage), head_set(stage))),
          state.model_state[stage],
        )
        for stage in (stage_name(m, label) for m in range(1, rounds + 1))
      }
      for label in labels
    }
    return task_accuracies(learners, models, state.params[ALPHAS], config, applies)

  return alphas_search_setup(
    config,
    program=program,
    init=init,
    batches_at=batches_at,
    per_epoch=per_epoch,
    schedule=schedule,
    evaluate=evaluate,
  )
