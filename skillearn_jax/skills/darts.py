"""DARTS (first and second order) as a Skillearn program.

One learning stage trains the supernet weights on the weight half of the training set with
the architecture α supporting; the validation stage minimizes the loss on the architecture
half over α through the hypergradient the config selects (`first_order` is DARTS-1st;
`finite_difference` is the official DARTS-2nd, `exact` its autodiff twin). No second-order
code lives here: the engine differentiates. The pieces every NAS skill shares live in
`nas_search`.
"""

from __future__ import annotations

from skillearn_jax import core
from skillearn_jax.skills import base
from skillearn_jax.skills import nas_search
from skillearn_jax.skills import progressive

WEIGHTS, ALPHAS = nas_search.WEIGHTS, nas_search.ALPHAS
stages = progressive.stages  # P-DARTS: a search in stages
check_config = nas_search.check_config


def darts_program(net, config, steps_per_epoch: int):
  """The DARTS program for `net`; returns (program, weight lr schedule)."""
  weights_set, schedule = nas_search.weight_param_set(
    WEIGHTS, config.weights_optim, steps_per_epoch, config.num_epochs
  )
  loss = nas_search.classification_loss(
    net,
    weights=WEIGHTS,
    alphas=ALPHAS,
    stats='batch_stats',
    variant=nas_search.variant_values(config, steps_per_epoch),
  )
  program = core.Program(
    param_sets=[
      weights_set,
      nas_search.arch_param_set(ALPHAS, config.alphas_optim, steps_per_epoch),
    ],
    stages=[core.Stage('train', active=[WEIGHTS], supporting=[ALPHAS], loss=loss)],
    validation=core.Validation(loss, {ALPHAS: 'minimize'}),
  )
  return program, schedule


def build(config) -> base.SkillSetup:
  weight_stream, arch_stream, info, data = nas_search.search_streams(config)
  steps_per_epoch = min(weight_stream.steps_per_epoch, arch_stream.steps_per_epoch)
  net = nas_search.make_supernet(config, info.num_classes)
  program, schedule = darts_program(net, config, steps_per_epoch)

  def init(key):
    weights, alphas, stats = nas_search.init_supernet(
      net, key, info.image_shape, nas_search.space_of(config)
    )
    return {WEIGHTS: weights, ALPHAS: alphas}, {'batch_stats': stats}

  def batches_at(step):
    return {'train': weight_stream.batch_at(step), 'val': arch_stream.batch_at(step)}

  return nas_search.alphas_search_setup(
    config,
    program=program,
    init=init,
    batches_at=batches_at,
    per_epoch=steps_per_epoch,
    schedule=schedule,
    evaluate=nas_search.valid_accuracy(config, net, data, info, steps_per_epoch),
  )
