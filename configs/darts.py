"""DARTS architecture search (Liu et al., 2019) on the Skillearn core.

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = ('', '2nd', '1st', 'exact')  # each with SPACE_VARIANTS and quick, comma separated


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """DARTS architecture search (Liu et al., 2019) on the Skillearn core.

  Variants: '' and '2nd' = DARTS-2nd (finite-difference hypergradient, as the
  official code), '1st' = DARTS-1st, 'exact' = second order by autodiff,
  'quick' = a tiny search on the embedded digits (minutes on a CPU). Add a variant
  of the DARTS family after a comma (`common.apply_space` holds each published recipe):

  | arg | paper row |
  |---|---|
  | `pdarts` | P-DARTS (Chen et al., 2019; Skillearn Tables 7-8 and IL Tables 2-3 baseline) |
  | `pcdarts` | PC-DARTS (Xu et al., 2020; IL Table 3 baseline) |
  | `darts_minus` | DARTS- (Chu et al., 2021; Skillearn Table 7 baseline) |
  | `2nd,darts_plus` | DARTS+ (Liang et al., 2019; Skillearn Table 7 baseline) |

  Where the official code and the papers differ the config follows the code: PC-DARTS
  searches first order, batch 256, lr 0.1 to 0, α after 15 epochs; P-DARTS 3 stages of 25
  epochs (5, 11, 17 cells), α after 10, dropout after skip-connects 0.1 / 0.4 / 0.7 (its
  README's rates); DARTS- first order with the auxiliary skip's coefficient from 1 towards 0;
  DARTS+ stops at 2 skip-connects in the normal cell or 10 epochs of a stable α ranking.
  P-DARTS' stages switch pruned ops off by masks, so every stage still computes all eight
  primitives (docs/performance.md, "The DARTS-family variants").

    python -m skillearn_jax.main --config=configs/darts.py:2nd --workdir=runs/darts2
    python -m skillearn_jax.main --config=configs/darts.py:1st --workdir=runs/darts1
    python -m skillearn_jax.main --config=configs/darts.py:quick --workdir=runs/darts_quick
    python -m skillearn_jax.main --config=configs/darts.py:pcdarts --workdir=runs/pcdarts
    python -m skillearn_jax.main --config=configs/darts.py:pdarts,quick --workdir=runs/pdarts_q
    python -m skillearn_jax.hypercheck --config=configs/darts.py:quick
  """
  base, spaces, quick = common.parse_variant(arg, VARIANTS, config_file='configs/darts.py')
  c = common.program_config('darts')
  common.darts_search_blocks(c)
  c.hypergradient = {'1st': 'first_order', 'exact': 'exact'}.get(base, 'finite_difference')
  for name in spaces:  # an explicit '1st', '2nd' or 'exact' keeps its method
    common.apply_space(c, name, keep_hypergradient=bool(base))
  if quick:
    common.quick_search(c)
    if spaces:
      common.quick_space(c)
  return c
