"""The hypergradient options a config sets reach core.HypergradientOptions."""

from configs import darts as darts_config
from skillearn_jax.run import options


def test_hypergradient_options_carry_the_config_fields():
  config = darts_config.get_config('exact')
  config.fd_epsilon, config.neumann_steps, config.cg_steps = 0.003, 7, 4
  config.exact_mode = 'reverse_over_reverse'
  got = options.hypergradient_options(config)
  assert (got.fd_epsilon, got.neumann_steps, got.cg_steps, got.exact_mode) == (
    0.003,
    7,
    4,
    'reverse_over_reverse',
  )
