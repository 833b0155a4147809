"""Interleaving Learning on the DARTS search space (IL-DARTS; Ban & Xie).

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = common.SEARCH_VARIANTS


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Interleaving Learning on the DARTS search space (IL-DARTS; Ban & Xie).

  Defaults are the IL paper's: K = 2 learners in the task order CIFAR-100,
  CIFAR-10 (so the interleaving is CIFAR-100, CIFAR-10, CIFAR-100, CIFAR-10),
  M = 2 rounds, lambda = 100, linear heads of 100 and 10 ways, DARTS space with
  8 cells and C = 16, weights SGD 0.025 cosine / momentum 0.9 / wd 3e-4, batch
  64, 50 epochs, alphas Adam 3e-4 / wd 1e-3, second order by finite
  differences (IL-DARTS-2nd). Each learner searches on the 50/50 split of its
  task's training set. (The Skillearn paper's IL section states the tradeoff
  as 1; the IL paper, which reports the search settings, uses 100.)

  Variants: '' and '2nd' (finite differences), '1st', 'exact', 'quick' (the
  two embedded digits tasks, digits_a 10-way then digits_b 5-way, 3 cells,
  C = 4, first order; minutes on a CPU).

  On the DARTS family (IL paper Tables 2-4): 'pdarts' = IL-PDARTS (16.14 % on CIFAR-100),
  'pcdarts' = IL-PCDARTS (2.55 % on CIFAR-10), each with the skill's hypergradient and the
  space's recipe, e.g. --config=configs/il_darts.py:pcdarts (quick twin: pcdarts,quick).

    python -m skillearn_jax.main --config=configs/il_darts.py --workdir=runs/il
    python -m skillearn_jax.main --config=configs/il_darts.py:quick --workdir=/tmp/il_quick
    python -m skillearn_jax.hypercheck --config=configs/il_darts.py:quick

  Ablations of the IL paper (its ablation studies) as overrides:
    lambda sweep:  --config.il.lam=10   (also 1, 1000, ...)
    coupling:      --config.il.coupling=mean  (lambda per encoder weight; paper: sum)
    rounds M:      --config.il.rounds=1  (and 2, 3)
    task order:    --config.il.tasks=cifar10,cifar100   (order 2)
    K >= 3:        --config.il.tasks=cifar100,cifar10,cifar100
  e.g.
    python -m skillearn_jax.main --config=configs/il_darts.py --config.il.rounds=3 --workdir=runs/il_m3
  """
  c, tasks = common.multitask_search('il', arg, config_file='configs/il_darts.py')
  c.il = ml_collections.ConfigDict(
    dict(
      tasks=tasks,  # learners l1..lK, in interleaving order
      rounds=2,  # M
      lam=100.0,  # lambda of ||W_k^(m) - W~_prev||^2
      # sum: lambda * ||W - W~_prev||^2 as both papers state it (IL Eq. 3, Skillearn Eq. 32);
      # mean: that divided by the number of encoder weights (a one-step factor near 1)
      coupling='sum',
    )
  )
  return c
