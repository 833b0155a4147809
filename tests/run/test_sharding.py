"""Data parallel step on 2 (host) devices computes what 1 device computes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from skillearn_jax.run import sharding
from tests.conftest import on_host_devices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run in fresh processes: the device count is fixed when jax starts.
PROGRAM = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from skillearn_jax import core
    from skillearn_jax.run import sharding

    def logits(p, x):
      return (x * p['alphas']) @ p['w']

    def xent(p, batch):
      x, y = batch
      logp = jax.nn.log_softmax(logits(p, x))
      return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def train_loss(p, batch, ctx):
      # A running mean over the whole batch: needs the cross-device mean.
      mean = 0.9 * ctx.model_state['feature_mean'] + 0.1 * jnp.mean(batch[0], 0)
      return core.LossOutput(xent(p, batch), model_state={'feature_mean': mean})

    program = core.Program(
        param_sets=[core.ParamSet('w', optax.sgd(0.1, momentum=0.9),
                                  unroll_lr=0.1, unroll_momentum=0.9),
                    core.ParamSet('alphas', optax.adam(0.01))],
        stages=[core.Stage('train', active=['w'], supporting=['alphas'],
                           loss=train_loss)],
        validation=core.Validation(lambda p, b, ctx: xent(p, b),
                                   {'alphas': 'minimize'}))
    rng = np.random.default_rng(0)
    def batch():
      return (rng.normal(size=(8, 5)).astype(np.float32),
              rng.integers(0, 3, size=8).astype(np.int32))
    batches = [{'train': batch(), 'val': batch()} for _ in range(3)]
    init = core.init_state(
        program, {'w': jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
                  'alphas': jnp.ones(5)},
        model_state={'feature_mean': jnp.zeros(5)})
    raw_step = core.make_step(program, method='exact', jit=False)

    def run(mesh, place_batches, this_process_part=lambda batch: batch,
            per_process=False):
      step = sharding.jit_data_parallel(raw_step, mesh)
      state = sharding.replicate(init, mesh)
      losses = []
      for i, b in enumerate(batches):
        b = this_process_part(b)
        if place_batches:
          b = sharding.shard_batch(b, mesh, per_process=per_process)
        state, metrics = step(state, b, jax.random.PRNGKey(i))
        losses.append([float(metrics['train/loss']), float(metrics['val/loss'])])
      leaves = [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(state)]
      return losses, leaves, list(state.params['w'].sharding.spec)
''')

TWO_DEVICE_SCRIPT = PROGRAM + textwrap.dedent('''
    two, one = sharding.make_mesh(), sharding.make_mesh(jax.devices()[:1])
    placed = sharding.shard_batch(batches[0], two)
    out = {
        'devices': jax.device_count(),
        'spec': list(placed['train'][0].sharding.spec),
        'shard_shapes': [list(s.data.shape)
                         for s in placed['train'][0].addressable_shards],
        'shard_devices': sorted(s.device.id
                                for s in placed['train'][0].addressable_shards),
        'two': run(two, place_batches=True),
        'two_host_batches': run(two, place_batches=False),
        'one': run(one, place_batches=True),
    }
    try:
      sharding.shard_batch({'train': np.zeros((7, 2))}, two)
    except ValueError as e:
      out['error'] = str(e)
    try:
      sharding.shard_batch([np.zeros((5, 2))], two, per_process=True)
    except ValueError as e:
      out['error_per_process'] = str(e)
    print('RESULT ' + json.dumps(out))
''')

# Two processes with one device each, as two hosts would run: each process
# feeds the whole batch, or its own half of it.
TWO_PROCESS_SCRIPT = (
  textwrap.dedent('''
    import sys
    import jax
    jax.distributed.initialize(sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]))
''')
  + PROGRAM
  + textwrap.dedent('''
    half = 4 * jax.process_index()
    mine = lambda b: jax.tree_util.tree_map(lambda a: a[half:half + 4], b)
    mesh = sharding.make_mesh()
    out = {'processes': jax.process_count(), 'devices': jax.device_count(),
           'global': run(mesh, True),
           'per_process': run(mesh, True, mine, per_process=True)}
    try:
      sharding.shard_batch({'x': np.zeros((3, 2))}, mesh)
    except ValueError as e:
      out['error'] = str(e)
    if jax.process_index() == 0:
      print('RESULT ' + json.dumps(out))
''')
)


def _result(stdout):
  line = [l for l in stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT ') :])


@pytest.fixture(scope='module')
def two_devices():
  return on_host_devices(TWO_DEVICE_SCRIPT, timeout=120)


@pytest.fixture(scope='module')
def two_processes():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', TWO_PROCESS_SCRIPT, f'localhost:{port}', str(i)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=120) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  return _result(outputs[0][0])


def test_batch_is_split_over_both_devices(two_devices):
  assert two_devices['devices'] == 2
  assert two_devices['spec'] == ['data']
  assert two_devices['shard_shapes'] == [[4, 5], [4, 5]]
  assert two_devices['shard_devices'] == [0, 1]


def test_two_device_steps_match_one_device(two_devices):
  two_losses, two_state, two_spec = two_devices['two']
  one_losses, one_state, _ = two_devices['one']
  np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5, atol=1e-5)
  for a, b in zip(two_state, one_state):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert two_spec == []  # state stays replicated
  # Numpy batches handed straight to the step are split on the way in.
  np.testing.assert_allclose(two_devices['two_host_batches'][0], two_losses, rtol=1e-6)
  # The losses moved: three real steps were taken.
  assert two_losses[0][0] != two_losses[-1][0]


@pytest.mark.parametrize('feed', ['global', 'per_process'])
def test_two_processes_match_one_process(two_devices, two_processes, feed):
  assert two_processes['processes'] == 2 and two_processes['devices'] == 2
  losses, state, spec = two_processes[feed]
  np.testing.assert_allclose(losses, two_devices['one'][0], rtol=1e-5, atol=1e-5)
  for a, b in zip(state, two_devices['one'][1]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert spec == []
  # The global batch must split over both processes' devices.
  assert (
    "field ['x'] has 3 examples, not divisible by the 2 devices of the "
    'data-parallel mesh' in two_processes['error']
  )


def test_indivisible_batch_names_the_config_field(two_devices):
  assert two_devices['error'] == (
    "config.data.batch_size: batch field ['train'] has 7 examples, not "
    'divisible by the 2 devices of the data-parallel mesh; use a batch size '
    'that is a multiple of 2'
  )
  assert two_devices['error_per_process'].startswith(
    'config.data.batch_size: batch field [0] has 5 examples, not divisible '
    'by the 2 devices of this process'
  )


def test_single_device_mesh_in_process():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ('data',) and mesh.size == jax.device_count()
  placed = sharding.shard_batch({'x': np.arange(6.0).reshape(3, 2)}, mesh)
  np.testing.assert_array_equal(placed['x'], np.arange(6.0).reshape(3, 2))
  with pytest.raises(ValueError, match=r"field \['s'\] is a scalar"):
    sharding.shard_batch({'s': np.float32(1.0)}, mesh)
  with pytest.raises(ValueError, match='make_mesh devices: empty'):
    sharding.make_mesh([])
