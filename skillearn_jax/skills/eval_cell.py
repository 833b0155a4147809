"""Config checks of architecture evaluation (`config.skill = 'eval_cell'`).

Evaluation trains one fixed genotype by plain supervised learning, so it is
no Skillearn program and has no `build`: `run.evaluate` owns its loop. This
module refuses a bad evaluation config before anything compiles, naming the
field and the allowed values (an unknown genotype lists the built-in names).
"""

from __future__ import annotations

from skillearn_jax.nas import eval_network
from skillearn_jax.nas import genotypes
from skillearn_jax.run import config_check

MODE = 'evaluate'  # config_check: the mode this skill runs in
SCHEDULES = ('cosine', 'exponential')
RNG_IMPLS = ('rbg', 'unsafe_rbg', 'threefry2x32')


def check_config(config) -> None:
  try:
    genotypes.resolve_genotype(config.genotype)
  except ValueError as error:
    raise config_check.ConfigError(f'config.genotype: {error}') from None
  config_check.one_of(config, 'net.network', tuple(eval_network.NETWORKS))
  config_check.one_of(config, 'optim.schedule', SCHEDULES)
  config_check.one_of(config, 'rng_impl', RNG_IMPLS)
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
