"""The multi-task (MTL) baseline of the IL paper as a Skillearn program.

One shared encoder architecture A (the DARTS alphas) searched on several
tasks at once (IL paper Eq. 10; Skillearn Eq. 38): each task k has its own
supernet weights (encoder W_k and head H_k), and all of them are trained
jointly in one learning stage on L_1^tr + beta * sum_{k>1} L_k^tr; the
validation stage minimizes L_1^val + alpha * sum_{k>1} L_k^val over A. The
paper sets alpha = beta = 1 (K = 2, CIFAR-100 first). Unlike IL there is no
interaction: the encoders of different tasks never see each other, which is
the point of the ablation. Tasks, supernets, streams and summed losses come
from `multitask`, shared with IL.
"""

from __future__ import annotations

from typing import Callable, Sequence

from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax.skills import base
from skillearn_jax.skills import multitask
from skillearn_jax.skills import nas_search
from skillearn_jax.skills import progressive

ALPHAS = nas_search.ALPHAS
stages = progressive.stages  # P-DARTS: a search in stages
STAGE = 'train'


def weights_set(label: str) -> str:
  return f'{label}/weights'


def task_weights(labels: Sequence[str], tradeoff: float) -> dict:
  """1 for the first task, `tradeoff` for every other (the paper's alpha or
  beta, K = 2)."""
  return {label: 1.0 if k == 0 else tradeoff for k, label in enumerate(labels)}


def mtl_program(
  labels: Sequence[str],
  *,
  train_tradeoff: float,
  val_tradeoff: float,
  task_loss: Callable[[int, str], core.LossFn],
  weight_set: Callable[[str], core.ParamSet],
  arch_set: core.ParamSet,
) -> core.Program:
  """Eq. 10 of the IL paper for any task loss.

  `task_loss(k, label)` reads the set `weights_set(label)`, the set
  `arch_set.name` and model-state entry `label`.
  """
  losses = {label: task_loss(k, label) for k, label in enumerate(labels)}
  return core.Program(
    param_sets=[arch_set] + [weight_set(weights_set(l)) for l in labels],
    stages=[
      core.Stage(
        STAGE,
        active=[weights_set(l) for l in labels],
        supporting=[arch_set.name],
        loss=multitask.summed_task_loss(losses, task_weights(labels, train_tradeoff)),
      )
    ],
    validation=core.Validation(
      multitask.summed_task_loss(losses, task_weights(labels, val_tradeoff)),
      {arch_set.name: 'minimize'},
      data='val',
    ),
  )


def check_config(config) -> None:
  nas_search.check_config(config)
  multitask.parse_tasks(config.mtl.tasks, 'mtl.tasks')
  config_check.positive(config, 'mtl.train_tradeoff', allow_zero=True)
  config_check.positive(config, 'mtl.val_tradeoff', allow_zero=True)


def build(config) -> base.SkillSetup:
  tasks = multitask.parse_tasks(config.mtl.tasks, 'mtl.tasks')
  learners = multitask.build_learners(config, tasks, 'mtl.tasks')
  labels = [l.label for l in learners]
  per_epoch = multitask.steps_per_epoch(learners)
  weight_set, schedule = multitask.weight_sets(config, per_epoch)
  program = mtl_program(
    labels,
    train_tradeoff=float(config.mtl.train_tradeoff),
    val_tradeoff=float(config.mtl.val_tradeoff),
    task_loss=lambda k, label: nas_search.classification_loss(
      learners[k].net,
      weights=weights_set(label),
      alphas=ALPHAS,
      stats=label,
      variant=nas_search.variant_values(config, per_epoch),
    ),
    weight_set=weight_set,
    arch_set=nas_search.arch_param_set(ALPHAS, config.alphas_optim, per_epoch),
  )

  def init(key):
    encoder, heads, alphas, stats = multitask.init_task_nets(
      [l.net for l in learners], key, learners[0].info.image_shape
    )
    params, model_state = {ALPHAS: alphas}, {}
    for label, head in zip(labels, heads):
      params[weights_set(label)] = multitask.fresh_copy({**encoder, **head})
      model_state[label] = multitask.fresh_copy(stats)
    return params, model_state

  def batches_at(step):
    return {
      STAGE: {l.label: l.train_stream.batch_at(step) for l in learners},
      'val': {l.label: l.val_stream.batch_at(step) for l in learners},
    }

  applies = [nas_search.eval_apply(l.net) for l in learners]

  def evaluate(state):
    models = {
      label: {f'{label}_accuracy': (state.params[weights_set(label)], state.model_state[label])}
      for label in labels
    }
    return multitask.task_accuracies(
      learners, models, state.params[ALPHAS], config, applies, step=state.step
    )

  return nas_search.alphas_search_setup(
    config,
    program=program,
    init=init,
    batches_at=batches_at,
    per_epoch=per_epoch,
    schedule=schedule,
    evaluate=evaluate,
  )
