"""The DARTS-family variants as searches: every variant's exact hypergradient against finite
differences in float64, DARTS+' stop, P-DARTS' stages resumed, bad variant configs refused."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import darts as darts_config
from configs import il_darts
from configs import lpt_darts
from configs import mtl_darts
from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax import skills
from skillearn_jax.nas import space as space_lib
from skillearn_jax.run import checkpoints
from skillearn_jax.run import runner
from skillearn_jax.run import stages
from skillearn_jax.skills import darts
from skillearn_jax.skills import nas_search
from tests import conftest

FEW_OPS = ('none', 'max_pool_3x3', 'skip_connect', 'sep_conv_3x3')


class Killed(Exception):
  """A run stopped from outside, as by a kill."""


def _tiny_space(name):
  kw = dict(primitives=FEW_OPS, nodes=2, multiplier=2)
  return {
    'pcdarts': space_lib.SearchSpace(partial_channels=2, edge_normalization=True, **kw),
    'darts_minus': space_lib.SearchSpace(auxiliary_skip=True, **kw),
    'pdarts': space_lib.SearchSpace(skip_dropout=True, **kw),
  }[name]


def _to64(tree):
  return jax.tree_util.tree_map(
    lambda x: (
      jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x
    ),
    tree,
  )


@pytest.mark.parametrize('name', ['pcdarts', 'darts_minus', 'pdarts'])
def test_exact_and_finite_difference_agree_on_each_variant(name):
  c = darts_config.get_config(f'{name},quick')
  c.pdarts.drop_rate = 0.3
  space = _tiny_space(name)
  # One reduction cell: stride-2 input edges and a stride-1 node edge.
  net = space.supernet(channels=4, num_classes=3, layers=1, remat=False)
  program, _ = darts.darts_program(net, c, steps_per_epoch=10)
  weights, alphas, stats = nas_search.init_supernet(net, jax.random.key(0), (8, 8, 1), space)
  state = core.init_state(program, {'weights': weights, 'alphas': alphas}, {'batch_stats': stats})
  rng = np.random.default_rng(0)
  batch = lambda: {
    'image': rng.normal(size=(4, 8, 8, 1)).astype(np.float32),
    'label': rng.integers(0, 3, 4).astype(np.int32),
  }
  batches = {'train': batch(), 'val': batch()}

  def hypergradient(state, method, epsilon):
    return core.hypergradient(
      program,
      params=state.params,
      opt_states=state.opt_states,
      model_state=state.model_state,
      step=state.step,
      batches=batches,
      key=jax.random.key(5),
      method=method,
      options=core.HypergradientOptions(fd_epsilon=epsilon),
    )[0]['alphas']

  with jax.enable_x64():
    state64 = _to64(state)
    batches = _to64(batches)
    exact = jax.jit(lambda s: hypergradient(s, 'exact', 0.01))(state64)
    fd = jax.jit(lambda s: hypergradient(s, 'finite_difference', 1e-5))(state64)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])
  e, f = flat(exact), flat(fd)
  assert np.linalg.norm(e) > 0
  assert e @ f / (np.linalg.norm(e) * np.linalg.norm(f)) >= 0.999
  if name == 'pcdarts':  # the edge β get a hypergradient of their own
    assert np.linalg.norm(flat(exact['betas'])) > 0


def test_darts_minus_coefficient_decays_linearly_per_epoch():
  c = darts_config.get_config('darts_minus')
  values = nas_search.variant_values(c, steps_per_epoch=10)
  assert float(values(0, None)['aux_scale']) == 1.0
  assert float(values(9, None)['aux_scale']) == 1.0  # per epoch, as the official scheduler
  assert float(values(490, None)['aux_scale']) == pytest.approx(1 / 50)  # (50 - 49) / 50


def test_pdarts_dropout_rate_follows_the_official_schedule():
  rate = lambda e: float(nas_search.pdarts_drop_rate(e, 0.4, 25, 10, 0.2))
  assert rate(0) == pytest.approx(0.4 * 24 / 25)
  assert rate(9) == pytest.approx(0.4 * 15 / 25)
  assert rate(10) == pytest.approx(0.4)
  assert rate(24) == pytest.approx(0.4 * np.exp(-0.2 * 14))


def _history(skips, rankings):
  genotype = {'normal': [['skip_connect', 0]] * skips + [['sep_conv_3x3', 1]] * (4 - skips)}
  return [
    {'epoch': i + 1, 'describe': {'genotype': genotype, 'alphas': a}}
    for i, a in enumerate(rankings)
  ]


def test_darts_plus_stops_on_skip_connects_and_on_a_stable_ranking():
  c = darts_config.get_config('darts_plus,quick')
  space = nas_search.space_of(c)
  stop = nas_search.darts_plus_stop(c)
  a = space.init_arch(jax.random.key(0))
  b = space.init_arch(jax.random.key(1))
  lists = lambda arch: jax.tree_util.tree_map(lambda x: np.asarray(x).tolist(), arch)
  assert stop(_history(1, [lists(a)])) is None
  assert 'holds 2 skip-connects' in stop(_history(2, [lists(a)]))
  assert stop(_history(1, [lists(a), lists(b)])) is None  # the ranking moved
  assert 'held for 1 epochs' in stop(_history(1, [lists(b), lists(b)]))
  assert nas_search.darts_plus_stop(darts_config.get_config('quick')) is None


def _pdarts_config():
  c = darts_config.get_config('pdarts,quick')
  c.pdarts.layers = (1, 1, 1)
  c.num_epochs = 1
  c.alphas_optim.warmup_epochs = 0
  c.data.eval_examples = 64
  c.compilation_cache_dir = conftest.XLA_CACHE_DIR
  return c


def _stable(summary):
  out = json.loads(json.dumps(summary))
  for stage in out['stages']:
    for k in ('step_seconds', 'examples_per_second'):
      stage['final_metrics'].pop(k, None)
  out['final_metrics'] = out['stages'][-1]['final_metrics']
  return out


def test_pdarts_stages_chain_and_a_run_killed_in_stage_two_resumes_there(tmp_path):
  config = _pdarts_config()
  full = runner.run(config, str(tmp_path / 'full'))
  assert [s['stage'] for s in full['stages']] == [1, 2, 3]
  assert [s['ops_per_edge'] for s in full['stages']] == [8, 5, 3]
  for i in (1, 2, 3):
    for name in ('genotype.json', 'summary.json', 'plots/alpha_normal.png'):
      assert os.path.exists(tmp_path / 'full' / f'stage_{i}' / name)
  with open(tmp_path / 'full' / 'genotype.json') as f:
    assert json.load(f) == full['genotype']

  split = str(tmp_path / 'split')
  capped = ml_collections.ConfigDict(config.to_dict())
  capped.max_steps = 5
  first = runner.run(capped, split)  # max_steps cuts stage 1: the command ends there
  assert first['stopped_in_stage'] == 1 and first['steps'] == 5
  assert not os.path.exists(os.path.join(split, 'stage_2'))

  calls = []

  def killed_in_stage_two(c, workdir):
    calls.append(c.pdarts.stage)
    if c.pdarts.stage == 2:
      partial = ml_collections.ConfigDict(c.to_dict())
      partial.max_steps = 5
      runner._run_one(partial, workdir)
      raise Killed  # mid-stage
    return runner._run_one(c, workdir)

  with pytest.raises(Killed):
    stages.run_stages(config, split, skills.stages(config), killed_in_stage_two)
  assert calls == [1, 2]
  starts = []

  def recording(c, workdir):
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'))
    starts.append((c.pdarts.stage, ckpt.latest_step()))
    ckpt.close()
    return runner._run_one(c, workdir)

  # The same command again: stage 1 is done, stage 2 resumes from its step 5.
  resumed = stages.run_stages(config, split, skills.stages(config), recording)
  assert starts == [(2, 5), (3, None)]
  assert _stable(resumed) == _stable(full)


@pytest.mark.parametrize(
  'get_config',
  [
    lambda: lpt_darts.get_config('pcdarts,quick'),
    lambda: il_darts.get_config('darts_minus,quick'),
    lambda: mtl_darts.get_config('pcdarts,quick'),
    lambda: darts_config.get_config('darts_plus,pcdarts,quick'),
  ],
)
def test_every_skill_builds_on_every_variant(get_config):
  config = get_config()
  skills.check(config)
  setup = skills.build(config)
  params, model_state = setup.init(jax.random.key(0))
  assert set(params['alphas']) >= {'normal', 'reduce'}
  if config.space == 'pcdarts':
    assert set(params['alphas']['betas']) == {'normal', 'reduce'}


@pytest.mark.parametrize(
  'field,value,message',
  [
    ('space', 'enas', r"config.space: 'enas' is not allowed; allowed: \('darts', 'pdarts'"),
    ('pcdarts.k', 3, r'config.pcdarts.k: 3 is not allowed with config.net.channels = 4'),
    ('pdarts.layers', (5, 11), r'config.pdarts: the stage lists must have one entry per stage'),
    ('pdarts.max_skips', -1, r'config.pdarts.max_skips: -1 is not allowed; must be >= 0'),
    ('darts_plus.max_skips', -1, r'config.darts_plus.max_skips: -1 is not allowed'),
    ('alphas_optim.warmup_epochs', 2, r'config.alphas_optim.warmup_epochs: 2 is not allowed'),
    ('pdarts.keep', (5, 3, 2), r'config.pdarts.keep: \(5, 3, 2\) is not allowed'),
    ('pdarts.keep', (5, 2, 1), r'with >= 3 in the last stage'),
  ],
)
def test_bad_variant_values_are_refused_before_compile(field, value, message):
  c = darts_config.get_config('pdarts,quick' if field.startswith('pdarts') else 'pcdarts,quick')
  skills.check(c)
  target = c
  *path, last = field.split('.')
  for part in path:
    target = target[part]
  target[last] = value
  with pytest.raises(config_check.ConfigError, match=message):
    skills.check(c)


def test_a_variant_takes_its_published_method_unless_one_is_named():
  assert darts_config.get_config('pcdarts').hypergradient == 'first_order'
  assert darts_config.get_config('2nd,pcdarts').hypergradient == 'finite_difference'
  assert darts_config.get_config('exact,pdarts').hypergradient == 'exact'
  assert lpt_darts.get_config('r18,pdarts').hypergradient == 'finite_difference'
  with pytest.raises(ValueError, match='names more than one search space'):
    darts_config.get_config('pdarts,pcdarts')
