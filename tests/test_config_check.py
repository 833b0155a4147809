"""Config checks: each refusal names the field, the value and what is allowed."""

import ml_collections
import pytest

from configs import darts as darts_config
from configs import eval_cifar
from skillearn_jax import config_check
from skillearn_jax import skills


def _nested(**values):
  return ml_collections.ConfigDict({'block': dict(values)})


def test_one_of_names_field_value_and_allowed_set():
  with pytest.raises(
    config_check.ConfigError,
    match=r"config.block.kind: 'c' is not allowed; "
    r"allowed: \('a', 'b'\)",
  ):
    config_check.one_of(_nested(kind='c'), 'block.kind', ('a', 'b'))
  config_check.one_of(_nested(kind='b'), 'block.kind', ('a', 'b'))


def test_positive_bounds_and_meaning():
  config_check.positive(_nested(x=0.5), 'block.x')
  config_check.positive(_nested(x=0), 'block.x', allow_zero=True)
  with pytest.raises(
    config_check.ConfigError, match=r'config.block.x: 0 is not allowed; must be > 0$'
  ):
    config_check.positive(_nested(x=0), 'block.x')
  with pytest.raises(
    config_check.ConfigError,
    match=r'config.block.clip: -5.0 is not allowed; must be '
    r'>= 0 \(0 turns clipping off\)',
  ):
    config_check.positive(
      _nested(clip=-5.0), 'block.clip', allow_zero=True, meaning='0 turns clipping off'
    )


@pytest.mark.parametrize('value,ok', [(0.0, True), (0.999, True), (1.0, False), (-0.1, False)])
def test_in_unit_interval(value, ok):
  config = _nested(b1=value)
  if ok:
    config_check.in_unit_interval(config, 'block.b1')
  else:
    with pytest.raises(config_check.ConfigError, match=r'config.block.b1: .* must lie in \[0, 1\)'):
      config_check.in_unit_interval(config, 'block.b1')


@pytest.mark.parametrize(
  'get_config', [lambda: darts_config.get_config('quick'), lambda: eval_cifar.get_config('quick')]
)
def test_a_negative_seed_is_refused_for_every_skill(get_config):
  config = get_config()
  skills.check(config)  # the shipped config passes
  config.seed = -1
  with pytest.raises(
    config_check.ConfigError, match='config.seed: -1 is not allowed; must be >= 0'
  ):
    skills.check(config)


@pytest.mark.parametrize(
  'get_config',
  [lambda: darts_config.get_config('quick'), lambda: eval_cifar.get_config('quick')],
)
def test_an_unknown_experiment_lists_the_registered_ones(get_config):
  config = get_config()
  config.experiment = 'teach'
  with pytest.raises(
    config_check.ConfigError,
    match=r"config.experiment: 'teach' is not allowed; allowed: \('hpo_ridge', 'darts'",
  ):
    skills.check(config)


def test_an_unknown_hypergradient_is_refused_naming_the_methods():
  config = darts_config.get_config('quick')
  config.hypergradient = 'newton'
  with pytest.raises(
    config_check.ConfigError, match=r"config.hypergradient: unknown method 'newton'; allowed: \("
  ):
    skills.check(config)


def test_evaluation_configs_hold_no_hypergradient_fields():
  assert 'hypergradient' not in eval_cifar.get_config('quick')
  skills.check(eval_cifar.get_config('quick'))


def test_an_unknown_exact_mode_is_refused():
  config = darts_config.get_config('exact')
  skills.check(config)
  config.exact_mode = 'sideways'
  with pytest.raises(
    config_check.ConfigError,
    match=r"config.exact_mode: 'sideways' is not allowed; "
    r"allowed: \('forward_over_reverse', "
    r"'reverse_over_reverse'\)",
  ):
    skills.check(config)


@pytest.mark.parametrize(
  'field,value', [('weights_optim.lr', float('nan')), ('alphas_optim.b1', float('inf'))]
)
def test_a_non_finite_number_is_refused_before_compile(field, value):
  config = darts_config.get_config('quick')
  block, name = field.split('.')
  config[block][name] = value
  with pytest.raises(
    config_check.ConfigError, match=rf'config.{field}: {value!r} is not allowed; must be a finite'
  ):
    skills.check(config)
