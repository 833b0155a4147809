"""Ridge-regression hyperparameter learning: the core's closed-form example.

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Ridge-regression hyperparameter learning: the core's closed-form example.

  One learning stage fits ridge weights w; the validation stage learns the log
  ridge strength through the one-step-unrolled hypergradient, which has a
  closed form, so every hypergradient method can be checked against truth:

    python -m skillearn_jax.hypercheck --config=configs/hpo_ridge.py
    python -m skillearn_jax.main --config=configs/hpo_ridge.py --workdir=runs/ridge
    python -m skillearn_jax.main --config=configs/hpo_ridge.py:quick --workdir=runs/ridge_quick
  """
  c = common.program_config('hpo_ridge')
  c.num_epochs = 200
  c.log_every_steps = 20
  c.ridge = ml_collections.ConfigDict(
    dict(
      n_train=200,
      n_val=200,
      dim=20,
      noise=0.5,
      xi=0.05,
      weight_lr=0.05,
      hyper_lr=0.05,
      unroll_steps=1,
      init_log_lam=0.0,
    )
  )
  if arg == 'quick':
    c.num_epochs = 20
  elif arg:
    raise ValueError(f"configs/hpo_ridge.py: unknown variant {arg!r}; allowed: '', 'quick'")
  return c
