"""DARTS ImageNet (mobile setting) evaluation of a searched cell.

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = ('', 'quick')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """DARTS ImageNet (mobile setting) evaluation of a searched cell.

  The official recipe: 14 cells, C = 48, 250 epochs, batch 128, SGD lr 0.1
  decayed ×0.97 every epoch, momentum 0.9, weight decay 3e-5, gradient clip 5,
  label smoothing 0.1, auxiliary head weight 0.4, no drop path; random
  resized crop 224 + flip + colour jitter to train, resize 256 + centre crop
  224 to test. Reports top-1 and top-5 on the validation split (tfds
  'validation', the catalog's 'test'). 'quick' keeps this recipe's optimizer,
  schedule and label smoothing on the embedded digits, but trains the CIFAR
  network: the ImageNet stems downsample 8x, which 8x8 digits cannot take.

    python -m skillearn_jax.main --config=configs/eval_imagenet.py --workdir=runs/eval_in \\
        --config.data.data_dir=/data/tfds
    python -m skillearn_jax.main --config=configs/eval_imagenet.py:quick --workdir=runs/eval_in_quick
  """
  if arg not in VARIANTS:
    raise ValueError(f'configs/eval_imagenet.py: unknown variant {arg!r}; allowed: {VARIANTS}')
  c = common.base_config('eval_cell')
  common.evaluation_blocks(
    c,
    network='imagenet',
    dataset='imagenet2012',
    layers=14,
    channels=48,
    batch_size=128,
    num_epochs=250,
  )
  c.data.color_jitter = True
  c.net.auxiliary_weight = 0.4
  c.net.drop_path_prob = 0.0
  c.optim.update(
    dict(schedule='exponential', lr=0.1, decay_rate=0.97, momentum=0.9, weight_decay=3e-5, clip=5.0)
  )
  c.label_smoothing = 0.1
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  if arg == 'quick':
    common.quick_evaluation(c)
  return c
