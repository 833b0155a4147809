"""Fields every experiment config shares: seed, hypergradient, run cadence.

`base_config()` returns the runner's fields with their defaults; each config
file adds its skill's own block. Allowed values are listed in
`skillearn_jax/run/config_check.py`, which refuses bad values before any
compile.
"""

import ml_collections


def base_config(skill: str, mode: str = 'search') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.skill = skill
  c.mode = mode                   # search | evaluate | teach
  c.seed = 0
  c.hypergradient = 'exact'       # exact | finite_difference | first_order | implicit
  c.order = 'validation_first'    # validation_first | stages_first
  c.fd_epsilon = 0.01
  c.neumann_steps = 10
  c.num_epochs = 1
  c.max_steps = -1                # > 0: stop after this many steps
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.keep_checkpoints = 2
  c.compilation_cache_dir = '~/.cache/skillearn_jax/xla'   # '' turns it off
  return c
