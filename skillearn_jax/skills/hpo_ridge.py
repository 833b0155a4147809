"""Ridge-regression hyperparameter learning: the core's closed-form check.

A bilevel program with one learning stage (weights w on the training split,
the log ridge strength h supporting) and a validation stage that minimizes
the validation error over h. With a one-step unroll
w' = w - xi * (X^T (X w - y) / n + e^h w), the hypergradient has the closed
form dL_val/dh = -xi e^h w . X_v^T (X_v w' - y_v) / m, and at the optimum
w* = (X^T X / n + e^h I)^-1 X^T y / n the implicit-function one is
dL_val/dh = -e^h grad L_val(w*) . A^-1 w*; T-step unrolls have a closed form
by the same recursion (`closed_form_unrolled`). The data are synthetic and fixed by
the seed, so the example runs anywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax.skills import base


def make_data(seed: int, n_train: int, n_val: int, dim: int, noise: float):
  rng = np.random.default_rng(seed)
  w_true = rng.normal(size=(dim,)).astype(np.float32)

  def split(n):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = x @ w_true + noise * rng.normal(size=(n,)).astype(np.float32)
    return {'x': x, 'y': y.astype(np.float32)}

  return {'train': split(n_train), 'val': split(n_val)}


def _mse(w, batch):
  return 0.5 * jnp.mean((batch['x'] @ w - batch['y']) ** 2)


def train_loss(params, batch, ctx):
  del ctx
  w = params['w']
  return _mse(w, batch) + 0.5 * jnp.exp(params['log_lam']) * jnp.sum(w * w)


def val_loss(params, batch, ctx):
  del ctx
  return _mse(params['w'], batch)


def build_program(
  *, xi: float, weight_lr: float, hyper_lr: float, unroll_steps: int = 1
) -> core.Program:
  return core.Program(
    param_sets=[
      core.ParamSet('w', optax.sgd(weight_lr), unroll_lr=xi),
      core.ParamSet('log_lam', optax.adam(hyper_lr)),
    ],
    stages=[
      core.Stage(
        'train', active=['w'], supporting=['log_lam'], loss=train_loss, unroll_steps=unroll_steps
      )
    ],
    validation=core.Validation(loss=val_loss, directions={'log_lam': 'minimize'}),
  )


def closed_form_unrolled(params, batches, xi, steps: int = 1):
  """dL_val(w_T)/dh for the T-step unroll, written out by hand.

  With A = X^T X / n + e^h I and b = X^T y / n, each step is
  w_{t+1} = w_t - xi (A w_t - b), so dw_{t+1}/dh = (I - xi A) dw_t/dh - xi e^h w_t
  from dw_0/dh = 0, and dL_val/dh = grad L_val(w_T) . dw_T/dh.
  """
  w, h = params['w'], params['log_lam']
  tr, va = batches['train'], batches['val']
  lam = jnp.exp(h)
  dw = jnp.zeros_like(w)
  for _ in range(steps):
    grad_w = tr['x'].T @ (tr['x'] @ w - tr['y']) / tr['x'].shape[0] + lam * w
    dw = dw - xi * (tr['x'].T @ (tr['x'] @ dw) / tr['x'].shape[0] + lam * dw) - xi * lam * w
    w = w - xi * grad_w
  grad_val = va['x'].T @ (va['x'] @ w - va['y']) / va['x'].shape[0]
  return jnp.dot(grad_val, dw)


def ridge_solution(h, batch):
  x, y = batch['x'], batch['y']
  a = x.T @ x / x.shape[0] + jnp.exp(h) * jnp.eye(x.shape[1])
  return jnp.linalg.solve(a, x.T @ y / x.shape[0]), a


def closed_form_implicit(h, batches):
  """dL_val(w*(h))/dh by the implicit function theorem, solved exactly."""
  w_star, a = ridge_solution(h, batches['train'])
  va = batches['val']
  grad_val = va['x'].T @ (va['x'] @ w_star - va['y']) / va['x'].shape[0]
  return -jnp.exp(h) * jnp.dot(grad_val, jnp.linalg.solve(a, w_star))


def check_config(config) -> None:
  for field in ('n_train', 'n_val', 'dim', 'xi', 'weight_lr', 'hyper_lr', 'unroll_steps'):
    config_check.positive(config, f'ridge.{field}')
  config_check.positive(config, 'ridge.noise', allow_zero=True)


def build(config) -> base.SkillSetup:
  """The ridge example as a runnable setup (see configs/hpo_ridge.py)."""
  r = config.ridge
  program = build_program(
    xi=r.xi, weight_lr=r.weight_lr, hyper_lr=r.hyper_lr, unroll_steps=r.unroll_steps
  )
  data = make_data(config.seed, r.n_train, r.n_val, r.dim, r.noise)

  def init(key):
    w = 0.1 * jax.random.normal(key, (r.dim,), jnp.float32)
    return {'w': w, 'log_lam': jnp.asarray(r.init_log_lam, jnp.float32)}, {}

  def closed_form(state, batches):
    # What each method approximates: the unrolled one (exact, finite
    # differences, first order) and the one at the true optimum w*(h)
    # (implicit, implicit_cg).
    return {
      'unrolled': {
        'log_lam': closed_form_unrolled(state.params, batches, r.xi, int(r.unroll_steps))
      },
      'optimum': {'log_lam': closed_form_implicit(state.params['log_lam'], batches)},
    }

  return base.SkillSetup(
    program=program,
    init=init,
    batches_at=lambda step: data,
    closed_form=closed_form,
    describe=lambda state: {'ridge_lambda': float(jnp.exp(state.params['log_lam']))},
    steps_per_epoch=1,
  )
