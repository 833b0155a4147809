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
say). The engine differentiates through the whole chain. Tasks, learners and
summed losses come from `multitask`, shared with the MTL baseline.
"""

from __future__ import annotations

from typing import Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp

from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax.skills import base
from skillearn_jax.skills import multitask
from skillearn_jax.skills import nas_search
from skillearn_jax.skills import progressive

ALPHAS = nas_search.ALPHAS
stages = progressive.stages  # P-DARTS: a search in stages


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


def num_weights(tree) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


# How lambda couples consecutive encoders. Both papers state the plain squared
# norm, lambda * ||W_k^(m) - W~_(k-1)^(m)||_2^2 (IL paper Eq. 3-5 and its update
# Eq. 7 with 2 eta lambda; Skillearn Eq. 32-35), so 'sum' is the default;
# 'mean' divides by the number of encoder weights N, so that the one-step
# factor 1 - 2 eta lambda / N stays near 1 at the paper's lambda = 100.
COUPLINGS = ('sum', 'mean')


def encoder_interaction(current: str, previous: str, coupling: str = 'sum') -> core.LossFn:
  """||W_current - W~_previous||^2 (divided by the number of encoder weights
  under 'mean' coupling); the stage's gamma carries lambda."""
  if coupling == 'mean':
    return lambda params, batch, ctx: (
      squared_distance(params[current], params[previous]) / num_weights(params[current])
    )
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
  coupling: str = 'sum',
) -> core.Program:
  """The IL program of Eq. 32 for any learner loss.

  `learner_loss(k, stage)` is learner k's loss reading the sets
  `encoder_set(stage)`, `head_set(stage)` and `arch_set.name`, and model
  state entry `stage`; `weight_set(name)` makes the ParamSet of an encoder
  or head set; `coupling` is one of `COUPLINGS`.
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
          interaction=encoder_interaction(encoder_set(stage), encoder_set(previous), coupling),
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
    multitask.summed_task_loss(
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
  nas_search.check_config(config)
  multitask.parse_tasks(config.il.tasks, 'il.tasks')
  config_check.positive(config, 'il.rounds')
  config_check.positive(config, 'il.lam', allow_zero=True)
  config_check.one_of(config, 'il.coupling', COUPLINGS)


def unstable_unroll_warning(config, num_learners: int, encoder_weights: int) -> str | None:
  """Words for the user when a stage's step overshoots: 2 eta lambda >= 2.

  A stage's objective L + lambda ||W - W_prev||^2 has the gradient
  grad L + 2 lambda (W - W_prev), so one step of rate eta (the weights'
  learning rate, which the one-step unroll of every hypergradient uses as
  xi, IL paper Eq. 7) leaves W - W_prev multiplied by 1 - 2 eta lambda. At
  2 eta lambda >= 2 that factor is <= -1: the step overshoots the previous
  encoder by more than it started from, the unrolled solutions grow along
  the chain, and only gradient clipping keeps the run finite. None when the
  factor is safe or no stage is coupled (one stage in all).
  """
  stages = int(config.il.rounds) * num_learners
  eta = float(config.weights_optim.lr)
  lam = float(config.il.lam)
  if config.il.coupling == 'mean':
    lam = lam / encoder_weights
  if stages < 2 or 2.0 * eta * lam < 2.0:
    return None
  per_weight = f' / {encoder_weights} weights' if config.il.coupling == 'mean' else ''
  unroll = (
    '' if config.hypergradient == 'first_order' else ', and the unroll its hypergradient takes,'
  )
  drift = (
    '; finite-difference hypergradients also drift from the exact ones on it '
    '(cosine -0.03 on configs/il_darts.py:quick)'
    if config.hypergradient == 'finite_difference'
    else ''
  )
  return (
    f'interleaving learning: 2 * eta * lambda = 2 * {eta:g} (weights_optim.lr) * '
    f'{float(config.il.lam):g}{per_weight} (il.lam) = {2.0 * eta * lam:g} >= 2, so each '
    f'step of the {stages} stages{unroll} multiplies the distance to the previous encoder '
    'by 1 - 2 * eta * lambda = '
    f'{1.0 - 2.0 * eta * lam:g}: they overshoot and grow, and only gradient clipping '
    f'(weights_optim.clip = {config.weights_optim.clip:g}) keeps the run finite{drift}. '
    'Choices: --config.hypergradient=exact (the unroll differentiated exactly), a smaller '
    '--config.il.lam or --config.weights_optim.lr (2 * eta * lambda < 2), or '
    '--config.il.coupling=mean (lambda divided by the number of encoder weights)'
  )


_WARNED: set = set()


def warn_once(message: str | None) -> None:
  """Logs `message` once per process, however often the experiment is built
  (a run of stages builds it once a stage)."""
  if message and message not in _WARNED:
    _WARNED.add(message)
    logging.warning(message)


def supernet_program(nets, labels, config, per_epoch: int):
  """The IL program of `config` over one supernet per learner; returns
  (program, weight lr schedule)."""
  weight_set, schedule = multitask.weight_sets(config, per_epoch)
  program = il_program(
    labels,
    int(config.il.rounds),
    float(config.il.lam),
    learner_loss=lambda k, stage: nas_search.classification_loss(
      nets[k],
      weights=(encoder_set(stage), head_set(stage)),
      alphas=ALPHAS,
      stats=stage,
      variant=nas_search.variant_values(config, per_epoch),
    ),
    weight_set=weight_set,
    arch_set=nas_search.arch_param_set(ALPHAS, config.alphas_optim, per_epoch),
    coupling=config.il.coupling,
  )
  return program, schedule


def init_supernet_params(nets, labels, rounds: int, key, image_shape):
  """(params, model_state) of every stage: every encoder starts from one
  init (as if each learner passed its encoder on), each head from its
  task's init, each stage with its own BatchNorm statistics."""
  encoder, heads, alphas, stats = multitask.init_task_nets(nets, key, image_shape)
  params, model_state = {ALPHAS: alphas}, {}
  for i, stage in enumerate(stage_order(labels, rounds)):
    params[encoder_set(stage)] = multitask.fresh_copy(encoder)
    params[head_set(stage)] = multitask.fresh_copy(heads[i % len(labels)])
    model_state[stage] = multitask.fresh_copy(stats)
  return params, model_state


def build(config) -> base.SkillSetup:
  tasks = multitask.parse_tasks(config.il.tasks, 'il.tasks')
  learners = multitask.build_learners(config, tasks, 'il.tasks')
  labels = [l.label for l in learners]
  nets = [l.net for l in learners]
  rounds = int(config.il.rounds)
  per_epoch = multitask.steps_per_epoch(learners)
  program, schedule = supernet_program(nets, labels, config, per_epoch)
  encoder_weights = 0
  if config.il.coupling == 'mean':  # the count, from shapes alone: nothing is initialized
    encoder_weights = num_weights(
      jax.eval_shape(
        lambda key: multitask.init_task_nets(nets, key, learners[0].info.image_shape)[0],
        jax.random.PRNGKey(0),
      )
    )
  warn_once(unstable_unroll_warning(config, len(learners), encoder_weights))

  def init(key):
    return init_supernet_params(nets, labels, rounds, key, learners[0].info.image_shape)

  def batches_at(step):
    batches = {f'train/{l.label}': l.train_stream.batch_at(step) for l in learners}
    batches['val'] = {l.label: l.val_stream.batch_at(step) for l in learners}
    return batches

  applies = [nas_search.eval_apply(l.net) for l in learners]

  def evaluate(state):
    models = {
      label: {
        f'{stage}_accuracy': (
          nas_search.merged_params(state.params, (encoder_set(stage), head_set(stage))),
          state.model_state[stage],
        )
        for stage in (stage_name(m, label) for m in range(1, rounds + 1))
      }
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
