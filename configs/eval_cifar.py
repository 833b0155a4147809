"""DARTS CIFAR evaluation: train a searched cell from scratch (Liu et al., 2019).

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = ('', 'cifar100', 'quick')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """DARTS CIFAR evaluation: train a searched cell from scratch (Liu et al., 2019).

  The official recipe: 20 cells, C = 36, 600 epochs, batch 96, SGD lr 0.025
  (cosine to 0, stepped per epoch), momentum 0.9, weight decay 3e-4, gradient
  clip 5, cutout 16, auxiliary head weight 0.4, drop path 0.2 ramped linearly
  with the epoch. Reports top-1 on the test split. Variants: '' = CIFAR-10,
  'cifar100' = the same recipe on CIFAR-100, 'quick' = a tiny net on the
  embedded digits (minutes on a CPU). The genotype is a built-in name or a
  search run's genotype.json.

    python -m skillearn_jax.main --config=configs/eval_cifar.py --workdir=runs/eval_c10
    python -m skillearn_jax.main --config=configs/eval_cifar.py --workdir=runs/eval_mine \\
        --config.genotype=runs/darts2/genotype.json
    python -m skillearn_jax.main --config=configs/eval_cifar.py:cifar100 --workdir=runs/eval_c100
    python -m skillearn_jax.main --config=configs/eval_cifar.py:quick --workdir=runs/eval_quick
  """
  if arg not in VARIANTS:
    raise ValueError(f'configs/eval_cifar.py: unknown variant {arg!r}; allowed: {VARIANTS}')
  c = common.base_config('eval_cell')
  common.evaluation_blocks(
    c,
    network='cifar',
    dataset='cifar100' if arg == 'cifar100' else 'cifar10',
    layers=20,
    channels=36,
    batch_size=96,
    num_epochs=600,
  )
  c.data.cutout_length = 16
  c.net.auxiliary_weight = 0.4
  c.net.drop_path_prob = 0.2
  c.optim.update(
    dict(schedule='cosine', lr=0.025, lr_min=0.0, momentum=0.9, weight_decay=3e-4, clip=5.0)
  )
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  if arg == 'quick':
    common.quick_evaluation(c)
  return c
