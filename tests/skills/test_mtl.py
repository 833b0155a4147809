"""The IL paper's multi-task baseline on the core: one joint stage of per-task
weights, the trade-offs where Eq. 10 puts them, a real supernet step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mtl_darts
from skillearn_jax import core
from skillearn_jax import config_check
from skillearn_jax import skills
from skillearn_jax.skills import mtl

LABELS = ('big', 'small')


def _scaled_loss(k, label):
  """loss = (k + 1) * ||weights||^2 * alphas: easy to hand-compute."""
  del k

  def loss(params, batch, ctx):
    del ctx
    return batch['scale'] * jnp.sum(params[mtl.weights_set(label)]['w'] ** 2) * params['alphas']

  return loss


def _program(train_tradeoff=0.5, val_tradeoff=3.0):
  return mtl.mtl_program(
    LABELS,
    train_tradeoff=train_tradeoff,
    val_tradeoff=val_tradeoff,
    task_loss=_scaled_loss,
    weight_set=lambda name: core.ParamSet(name, optax.sgd(0.1), unroll_lr=0.1),
    arch_set=core.ParamSet('alphas', optax.sgd(0.1)),
  )


def test_one_joint_stage_of_per_task_weights():
  program = _program()
  assert [s.name for s in program.stages] == ['train']
  stage = program.stages[0]
  assert tuple(stage.active) == ('big/weights', 'small/weights')
  assert tuple(stage.supporting) == ('alphas',)
  assert stage.interaction is None and tuple(stage.uses) == ()
  assert dict(program.validation.directions) == {'alphas': 'minimize'}


def test_tradeoffs_weight_the_second_task_in_training_and_validation():
  program = _program(train_tradeoff=0.5, val_tradeoff=3.0)
  params = {
    'alphas': jnp.float32(2.0),
    'big/weights': {'w': jnp.array([1.0, 2.0])},  # ||w||^2 = 5
    'small/weights': {'w': jnp.array([3.0])},
  }  # ||w||^2 = 9
  batch = {'big': {'scale': 1.0}, 'small': {'scale': 1.0}}
  ctx = core.LossContext(jax.random.PRNGKey(0), {}, jnp.int32(0))
  train = program.stages[0].loss(params, batch, ctx)
  val = program.validation.loss(params, batch, ctx)
  assert float(train.value) == pytest.approx(2 * (5 + 0.5 * 9))  # L1 + beta L2
  assert float(val.value) == pytest.approx(2 * (5 + 3.0 * 9))  # L1 + alpha L2
  assert float(train.metrics['small/loss']) == pytest.approx(18.0)


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('tasks', 'cifar10', 'at least 2'),
    ('tasks', 'cifar10,svhn', "unknown task 'svhn'"),
    ('train_tradeoff', -1.0, 'must be >= 0'),
    ('val_tradeoff', -0.5, 'must be >= 0'),
  ],
)
def test_config_errors_name_the_field(field, value, message):
  c = mtl_darts.get_config('quick')
  c.mtl[field] = value
  with pytest.raises(config_check.ConfigError, match=f'config.mtl.{field}.*{message}'):
    skills.check(c)


def test_paper_defaults():
  c = mtl_darts.get_config()
  assert c.mtl.tasks == 'cifar100,cifar10'
  assert (c.mtl.train_tradeoff, c.mtl.val_tradeoff) == (1.0, 1.0)
  assert c.hypergradient == 'finite_difference'


def test_one_real_step_on_a_tiny_supernet():
  c = mtl_darts.get_config('quick')
  c.net.layers, c.net.channels = 1, 4  # one (reduction) cell: compile time
  c.data.batch_size, c.data.eval_examples = 4, 8
  setup = mtl.build(c)
  params, model_state = setup.init(jax.random.PRNGKey(0))
  assert params['digits_a/weights']['classifier']['kernel'].shape[-1] == 10
  assert params['digits_b/weights']['classifier']['kernel'].shape[-1] == 5
  state = core.init_state(setup.program, params, model_state)
  step = core.make_step(setup.program, method='first_order')
  new_state, metrics = step(state, setup.batches_at(0), jax.random.PRNGKey(1))
  assert {
    'train/digits_a/loss',
    'train/digits_b/loss',
    'val/digits_a/loss',
    'val/digits_b/loss',
    'hypergrad/alphas/norm',
  } <= set(metrics)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  # both tasks' weights moved; their encoders stay separate parameters
  for label in ('digits_a', 'digits_b'):
    moved = jax.tree_util.tree_map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))),
      state.params[f'{label}/weights'],
      new_state.params[f'{label}/weights'],
    )
    assert max(jax.tree_util.tree_leaves(moved)) > 0
  accuracies = setup.evaluate(new_state)
  assert set(accuracies) == {'digits_a_accuracy', 'digits_b_accuracy'}
