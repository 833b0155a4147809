"""Checkpoints: exact round trip of real optax states, retention, crash safety."""

import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skillearn_jax import core
from skillearn_jax.run import checkpoints

# The DARTS optimizers: weights clip + decay + SGD momentum, alphas Adam.
WEIGHTS_OPT = optax.chain(
  optax.clip_by_global_norm(5.0), optax.add_decayed_weights(3e-4), optax.sgd(0.025, momentum=0.9)
)
ALPHAS_OPT = optax.adamw(3e-4, b1=0.5, b2=0.999, weight_decay=1e-3)


def _state(seed: int) -> core.ProgramState:
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = {
    'weights': {'conv': jax.random.normal(k1, (3, 3, 2, 4)), 'bias': jnp.zeros(4)},
    'alphas': jax.random.normal(k2, (5, 8)) * 1e-3,
  }
  opt_states = {
    'weights': WEIGHTS_OPT.init(params['weights']),
    'alphas': ALPHAS_OPT.init(params['alphas']),
  }
  # Move the optimizer states off their zeros so the round trip means something.
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  for name, opt in (('weights', WEIGHTS_OPT), ('alphas', ALPHAS_OPT)):
    _, opt_states[name] = opt.update(grads[name], opt_states[name], params[name])
  model_state = {'batch_stats': {'mean': jax.random.uniform(k3, (4,)), 'var': jnp.ones(4)}}
  return core.ProgramState(
    step=jnp.int32(seed), params=params, opt_states=opt_states, model_state=model_state
  )


def _assert_same(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_bit_exact_and_keeps_optax_types(tmp_path):
  state = _state(7)
  extra = {
    'epoch': np.int64(3),
    'history': [{'val/loss': np.float32(0.5)}],
    'best': jnp.float32(0.25),
  }
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.save(7, state, extra)
    restored, restored_extra = ckpt.restore(_state(0))
  _assert_same(restored, state)
  assert isinstance(restored, core.ProgramState)
  sgd_trace = restored.opt_states['weights'][2][0]
  assert isinstance(sgd_trace, optax.TraceState)
  assert isinstance(restored.opt_states['weights'][0], optax.EmptyState)
  adam = restored.opt_states['alphas'][0]
  assert isinstance(adam, optax.ScaleByAdamState) and int(adam.count) == 1
  assert restored_extra == {'epoch': 3, 'history': [{'val/loss': 0.5}], 'best': 0.25}
  # The restored optimizer states continue exactly like the originals.
  grads = jax.tree_util.tree_map(jnp.ones_like, state.params['alphas'])
  chex.assert_trees_all_equal(
    ALPHAS_OPT.update(grads, restored.opt_states['alphas'], restored.params['alphas']),
    ALPHAS_OPT.update(grads, state.opt_states['alphas'], state.params['alphas']),
  )


def test_restore_into_abstract_template(tmp_path):
  state = _state(3)
  abstract = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(3, state, {})
    restored, extra = ckpt.restore(abstract)
  _assert_same(restored, state)
  assert extra == {}


def test_keeps_the_newest_n_and_restores_any_kept_step(tmp_path):
  with checkpoints.Checkpointer(str(tmp_path), keep=2) as ckpt:
    assert ckpt.latest_step() is None
    for step in (10, 20, 30):
      ckpt.save(step, _state(step), {'epoch': step // 10})
    assert ckpt.all_steps() == [20, 30]
    assert ckpt.latest_step() == 30
    older, extra = ckpt.restore(_state(0), step=20)
    assert int(older.step) == 20 and extra == {'epoch': 2}
    with pytest.raises(ValueError, match=r'step: 10 is not in .*\[20, 30\]'):
      ckpt.restore(_state(0), step=10)
    # A step at or before the newest is not written twice.
    assert not ckpt.save(30, _state(1), {})
    latest, _ = ckpt.restore(_state(0))
    # The JSON record alone, without a template state.
    assert ckpt.restore_extra() == {'epoch': 3}
    assert ckpt.restore_extra(20) == {'epoch': 2}
    with pytest.raises(ValueError, match=r'step: 10 is not in'):
      ckpt.restore_extra(10)
  _assert_same(latest, _state(30))
  assert sorted(os.listdir(tmp_path)) == ['20', '30']


def test_empty_directory_has_no_latest_step(tmp_path):
  with checkpoints.Checkpointer(str(tmp_path / 'new')) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
      ckpt.restore(_state(0))
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
      ckpt.restore_extra()


def test_interrupted_save_is_ignored_and_cleaned_up(tmp_path):
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(5, _state(5), {'epoch': 1})
  # What a crash mid-save leaves: orbax's temporary directory, half written.
  partial = tmp_path / '9.orbax-checkpoint-tmp-1712345678'
  shutil.copytree(tmp_path / '5', partial)
  shutil.rmtree(partial / 'state')
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.latest_step() == 5
    restored, extra = ckpt.restore(_state(0))
    assert not partial.exists()
    # Saving continues normally after the crash.
    assert ckpt.save(9, _state(9), {'epoch': 2})
    assert ckpt.all_steps() == [5, 9]
  _assert_same(restored, _state(5))
  assert extra == {'epoch': 1}


def test_bad_arguments_are_named(tmp_path):
  with pytest.raises(ValueError, match='keep: 0 is not allowed'):
    checkpoints.Checkpointer(str(tmp_path), keep=0)
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    with pytest.raises(TypeError, match='extra: object value'):
      ckpt.save(1, _state(1), {'bad': object()})
    assert ckpt.latest_step() is None


def _three_checkpoints(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  with checkpoints.Checkpointer(directory, keep=3) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, _state(step), {'at': step})
  return directory


def _truncate_largest_array_file(step_dir):
  # The arrays a restore reads are the files of state/d/ (ocdbt.process_0/ holds the
  # per-process copies merged into it).
  data = os.path.join(step_dir, 'state', 'd')
  largest = max((os.path.join(data, name) for name in os.listdir(data)), key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 2)


def _empty(step_dir):
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


DAMAGES = {
  'truncated array file': (_truncate_largest_array_file, 'does not read'),
  'missing _METADATA': (lambda d: os.remove(os.path.join(d, 'state', '_METADATA')), '_METADATA'),
  'missing manifest': (
    lambda d: os.remove(os.path.join(d, 'state', 'manifest.ocdbt')),
    'manifest.ocdbt',
  ),
  'empty step directory': (_empty, '_CHECKPOINT_METADATA'),
}


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_one_before_restores(
  tmp_path, damage, caplog
):
  directory = _three_checkpoints(tmp_path)
  harm, why = DAMAGES[damage]
  harm(os.path.join(directory, '3'))
  said = []
  with checkpoints.Checkpointer(directory, keep=3) as ckpt:
    step, state, extra = ckpt.restore_newest(_state(0), say=said.append)
    assert ckpt.all_steps() == [1, 2]
  assert (step, extra) == (2, {'at': 2})
  _assert_same(state, _state(2))
  assert len(said) == 1 and said[0].startswith('checkpoint 3 is damaged') and why in said[0]
  moved = os.listdir(tmp_path / 'damaged_checkpoints')
  assert len(moved) == 1 and moved[0].startswith('3.')  # kept, renamed, not deleted
  assert os.path.exists(tmp_path / 'damaged_checkpoints' / moved[0])
  assert not [r for r in caplog.records if r.name == 'asyncio']  # no page of tensorstore spec


def test_a_leftover_temporary_directory_does_not_block_a_restore(tmp_path):
  directory = _three_checkpoints(tmp_path)
  os.rename(os.path.join(directory, '3'), os.path.join(directory, '4.orbax-checkpoint-tmp-99'))
  said = []
  with checkpoints.Checkpointer(directory, keep=3) as ckpt:
    step, state, _ = ckpt.restore_newest(_state(0), say=said.append)
  assert step == 2 and not said
  _assert_same(state, _state(2))


def test_when_no_checkpoint_reads_nothing_is_moved_and_the_error_says_what_to_do(tmp_path):
  directory = _three_checkpoints(tmp_path)
  other = {'weights': jnp.zeros(3)}  # another program's state: nothing of it reads
  with checkpoints.Checkpointer(directory, keep=3) as ckpt:
    with pytest.raises(checkpoints.CheckpointError, match='no checkpoint in .* restores'):
      ckpt.restore_newest(other)
    assert ckpt.all_steps() == [1, 2, 3]
  assert not os.path.exists(tmp_path / 'damaged_checkpoints')
