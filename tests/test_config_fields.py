"""The field table behind --describe: whole, in step with the registries, and checked."""

import glob
import importlib
import os

import pytest

from configs import common
from skillearn_jax import config_check
from skillearn_jax import config_fields
from skillearn_jax import core
from skillearn_jax import skills
from skillearn_jax.nas import conv
from skillearn_jax.nas import eval_network
from skillearn_jax.nas import space
from skillearn_jax.nas import tester
from skillearn_jax.skills import eval_cell
from skillearn_jax.skills import lpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shipped_configs():
  """(name, config) of every config file with each of its variants (and each search space)."""
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    if name in ('__init__', 'common'):
      continue
    module = importlib.import_module(f'configs.{name}')
    if name == 'rows' or not hasattr(module, 'get_config'):  # a paper row, the published figures
      continue
    variants = list(getattr(module, 'VARIANTS', ('',)))
    if 'quick' not in variants:
      variants.append('quick')
    if hasattr(module, 'VARIANTS') and 'quick' not in module.VARIANTS:  # a search: any space
      variants += [f'quick,{s}' for s in common.SPACE_VARIANTS]
    for variant in variants:
      yield f'{name}:{variant}', module.get_config(variant) if variant else module.get_config()


CONFIGS = dict(shipped_configs())


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_every_field_of_every_shipped_config_has_a_meaning_and_passes_its_checks(name):
  config = CONFIGS[name]
  missing = [f for f, _ in config_fields.leaves(config) if config_fields.lookup(f) is None]
  assert not missing, f'{name}: no entry in config_fields.FIELDS for {missing}'
  config_fields.check_ranges(config)


@pytest.mark.parametrize(
  'field,registry',
  [
    ('experiment', skills.EXPERIMENTS),
    ('hypergradient', core.hypergradient_methods.REGISTRY),
    ('order', core.ORDERS),
    ('exact_mode', core.EXACT_MODES),
    ('rng_impl', skills.RNG_IMPLS),
    ('space', space.SPACES),
    ('net.conv_impl', conv.CONV_IMPLS),
    ('net.network', eval_network.NETWORKS),
    ('lpt.mode', lpt.MODES),
    ('lpt.encoder', tester.ENCODERS),
    ('optim.schedule', eval_cell.SCHEDULES),
  ],
)
def test_each_choice_listed_is_the_registry_it_names(field, registry):
  assert config_fields.lookup(field).allowed.split(' | ') == list(registry)


@pytest.mark.parametrize(
  'field,value,message',
  [
    ('data.eval_batch_size', 0, 'config.data.eval_batch_size: 0 is not allowed; must be > 0'),
    ('max_steps', -2, 'config.max_steps: -2 is not allowed; must be >= -1'),
    (
      'data.train_portion',
      1.5,
      'config.data.train_portion: 1.5 is not allowed; must lie in [0, 1]',
    ),
    ('weights_optim.momentum', 1.0, 'config.weights_optim.momentum: 1.0 is not allowed; must lie'),
    ('tester_optim.clip', -1.0, 'config.tester_optim.clip: -1.0 is not allowed; must be >= 0'),
    ('exact_mode', 'fwd', "config.exact_mode: 'fwd' is not allowed; allowed: ("),
  ],
)
def test_a_value_out_of_its_range_is_named(field, value, message):
  config = CONFIGS['lpt_darts:quick'].copy_and_resolve_references()
  *path, last = field.split('.')
  target = config
  for part in path:
    target = target[part]
  target[last] = value
  with pytest.raises(config_check.ConfigError) as error:
    config_fields.check_ranges(config)
  assert str(error.value).startswith(message)


def test_an_unknown_field_has_no_entry_and_patterns_cover_every_optimizer_block():
  assert config_fields.lookup('weights_optim.lrr') is None
  assert config_fields.lookup('creator_optim.lr') == config_fields.lookup('weights_optim.lr')
