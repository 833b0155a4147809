"""The multi-task baseline of the IL paper (MTL-DARTS2nd; IL paper Eq. 10).

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = common.SEARCH_VARIANTS


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The multi-task baseline of the IL paper (MTL-DARTS2nd; IL paper Eq. 10).

  A shared DARTS cell searched jointly on CIFAR-100 and CIFAR-10: per-task
  supernet weights trained in one stage on L_100^tr + beta * L_10^tr, the
  architecture on L_100^val + alpha * L_10^val, alpha = beta = 1. Search
  settings as IL-DARTS (configs/il_darts.py): 8 cells, C = 16, SGD 0.025
  cosine, batch 64, 50 epochs, Adam 3e-4 for the alphas, second order by
  finite differences.

  Variants: '' and '2nd', '1st', 'exact', 'quick' (digits_a + digits_b, 3
  cells, C = 4, first order; minutes on a CPU).

  On the DARTS family (IL paper Tables 2-4 baselines): 'pdarts' = MTL-PDARTS, 'pcdarts' =
  MTL-PCDARTS, e.g. --config=configs/mtl_darts.py:pdarts (quick twin: pdarts,quick).

    python -m skillearn_jax.main --config=configs/mtl_darts.py --workdir=runs/mtl
    python -m skillearn_jax.main --config=configs/mtl_darts.py:quick --workdir=/tmp/mtl_quick
    python -m skillearn_jax.hypercheck --config=configs/mtl_darts.py:quick

  Overrides: --config.mtl.val_tradeoff=0.5 (alpha), --config.mtl.train_tradeoff=2
  (beta), --config.mtl.tasks=cifar10,cifar100 (which task is weighted 1).
  """
  c, tasks = common.multitask_search('mtl', arg, config_file='configs/mtl_darts.py')
  c.mtl = ml_collections.ConfigDict(
    dict(
      tasks=tasks,
      train_tradeoff=1.0,  # beta: weight of tasks 2..K in the training loss
      val_tradeoff=1.0,
    )
  )  # alpha: weight of tasks 2..K in the validation loss
  return c
