"""DARTS architecture search (Liu et al., 2019) on the Skillearn core.

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = ('', '2nd', '1st', 'exact', 'quick')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """DARTS architecture search (Liu et al., 2019) on the Skillearn core.

  Variants: '' and '2nd' = DARTS-2nd (finite-difference hypergradient, as the
  official code), '1st' = DARTS-1st, 'exact' = second order by autodiff,
  'quick' = a tiny search on the embedded digits (minutes on a CPU).

    python -m skillearn_jax.main --config=configs/darts.py:2nd --workdir=runs/darts2
    python -m skillearn_jax.main --config=configs/darts.py:1st --workdir=runs/darts1
    python -m skillearn_jax.main --config=configs/darts.py:quick --workdir=runs/darts_quick
    python -m skillearn_jax.hypercheck --config=configs/darts.py:quick
  """
  if arg not in VARIANTS:
    raise ValueError(f'configs/darts.py: unknown variant {arg!r}; allowed: {VARIANTS}')
  c = common.program_config('darts')
  common.darts_search_blocks(c)
  c.hypergradient = {'1st': 'first_order', 'exact': 'exact'}.get(arg, 'finite_difference')
  if arg == 'quick':
    common.quick_search(c)
  return c
