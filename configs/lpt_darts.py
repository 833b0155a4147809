"""Learning by Passing Tests on DARTS (Skillearn §3, Eq. 11) on the core.

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = ('', 'r18', '2nd', '1st', 'r50', 'difficulty_only', 'test_only')  # + spaces, quick


def lpt_blocks(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The tester's and the creator's blocks, with the paper's defaults."""
  c.lpt = ml_collections.ConfigDict(
    dict(
      mode='full',  # full | test_only | difficulty_only
      encoder='resnet18',  # tiny | resnet18 | resnet50
      weight_lambda=1.0,  # lambda: tester validation loss weight
      weight_gamma=1.0,  # gamma: created-test loss weight in Stage II
      grid_examples=8,
    )
  )  # most/least selected examples drawn per row
  c.tester_optim = ml_collections.ConfigDict(
    dict(lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4, clip=5.0)
  )
  c.creator_optim = ml_collections.ConfigDict(dict(lr=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3))
  return c


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Learning by Passing Tests on DARTS (Skillearn §3, Eq. 11) on the core.

  Variants: '' and 'r18' = LPT-R18-DARTS-2nd (ResNet-18 tester, finite-
  difference hypergradient as the official code), '2nd' the same, '1st' =
  LPT-R18-DARTS-1st (first-order), 'r50' = LPT-R50-DARTS-2nd,
  'difficulty_only' = ablation 1 (Eq. 25: one free selection scalar per bank
  example, no tester), 'test_only' = ablation 2 (Eq. 26: the tester trains on
  the created test alone), 'quick' = a tiny first-order search on the
  embedded digits (tiny encoder, 3 cells, minutes on a CPU). Testee as DARTS; tester SGD
  0.025, momentum 0.9, wd 3e-4, per-epoch cosine (clip 5 as the testee);
  creator Adam 3e-4, betas (0.5, 0.999), wd 1e-3; lambda = gamma = 1.

    python -m skillearn_jax.main --config=configs/lpt_darts.py:r18 --workdir=runs/lpt_r18
    python -m skillearn_jax.main --config=configs/lpt_darts.py:r50 --workdir=runs/lpt_r50
    python -m skillearn_jax.main --config=configs/lpt_darts.py:1st --workdir=runs/lpt_1st
    python -m skillearn_jax.main --config=configs/lpt_darts.py:difficulty_only --workdir=runs/lpt_diff
    python -m skillearn_jax.main --config=configs/lpt_darts.py:test_only --workdir=runs/lpt_test_only
    python -m skillearn_jax.main --config=configs/lpt_darts.py:quick --workdir=/tmp/lpt_quick
    python -m skillearn_jax.hypercheck --config=configs/lpt_darts.py:quick

  Lambda and gamma sweeps (the paper's ablation keeps gamma = 1):

    for l in 0.1 0.5 1 2 3; do python -m skillearn_jax.main \
      --config=configs/lpt_darts.py:r18 --config.lpt.weight_lambda=$l \
      --workdir=runs/lpt_lambda_$l; done
    for g in 0.1 0.5 1 2 3; do python -m skillearn_jax.main \
      --config=configs/lpt_darts.py:r18 --config.lpt.weight_gamma=$g \
      --workdir=runs/lpt_gamma_$g; done

  On the DARTS family (Skillearn Tables 7-8 rows LPT-R18/R50 on DARTS-1st/2nd, DARTS-,
  DARTS+ and P-DARTS), add the variant after a comma; the space's recipe applies with the
  variant's own hypergradient (finite differences, or first order with '1st'):

    --config=configs/lpt_darts.py:r18,pdarts       LPT-R18-P-DARTS (Table 8, CIFAR-100)
    --config=configs/lpt_darts.py:r18,darts_minus  LPT-R18-DARTS-
    --config=configs/lpt_darts.py:r18,darts_plus   LPT-R18-DARTS+
    --config=configs/lpt_darts.py:r50,pdarts       LPT-R50-P-DARTS (and r50,darts_minus ...)
    --config=configs/lpt_darts.py:1st,darts_minus  LPT-R18-DARTS-1st on DARTS-
    --config=configs/lpt_darts.py:pdarts,quick     its quick twin on the digits

  The selection scalars of 'difficulty_only' use the creator's optimizer
  (`config.creator_optim`); the paper gives them no rate of their own.
  """
  arg, spaces, quick = common.parse_variant(arg, VARIANTS, config_file='configs/lpt_darts.py')
  c = common.program_config('lpt')
  common.darts_search_blocks(c)
  lpt_blocks(c)
  c.hypergradient = 'first_order' if arg == '1st' else 'finite_difference'
  if arg == 'r50':
    c.lpt.encoder = 'resnet50'
  if arg in ('difficulty_only', 'test_only'):
    c.lpt.mode = arg
  for name in spaces:
    common.apply_space(c, name, keep_hypergradient=True)
  if quick:
    common.quick_search(c)
    c.lpt.encoder = 'tiny'
    # Compile time is the budget on a CPU: the quick run is first order;
    # hypercheck on it compares all methods, and --config.hypergradient
    # switches the run itself.
    c.hypergradient = 'first_order'
    if spaces:
      common.quick_space(c)
  return c
