"""Bad input, as a new user gives it: each case is one line naming the field, file or workdir
and what is allowed, and leaves the workdir as it found it (absent stays absent; an existing
run's files keep their bytes and times).

The runner refuses config values before it builds or compiles anything, so these run in
milliseconds; the data, genotype, workdir and checkpoint cases build no more than they must.
What only the command line meets (flag parsing) goes through `cli` in process; the real
command's exit status and --describe are tested in test_main.py.
"""

import os
import subprocess

import pytest

from configs import eval_cifar
from configs import hpo_ridge
from configs import il_darts
from configs import lpt_darts
from configs import mtl_darts
from configs import darts
from tests import conftest
from skillearn_jax import cli
from skillearn_jax.run import runner
from skillearn_jax.run import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASES = {
  'darts': lambda: darts.get_config('quick'),
  'pcdarts': lambda: darts.get_config('pcdarts,quick'),
  'pdarts': lambda: darts.get_config('pdarts,quick'),
  'lpt': lambda: lpt_darts.get_config('quick'),
  'il': lambda: il_darts.get_config('quick'),
  'mtl': lambda: mtl_darts.get_config('quick'),
  'eval': lambda: eval_cifar.get_config('quick'),
  'ridge': lambda: hpo_ridge.get_config('quick'),
}


def _config(base, **overrides):
  return conftest.with_overrides(
    BASES[base](), **{'compilation_cache_dir': conftest.XLA_CACHE_DIR, **overrides}
  )


# (base, {field: value}, what the line starts with)
CONFIG_CASES = [
  ('darts', {'seed': -1}, 'config.seed: -1 is not allowed; must be >= 0'),
  ('darts', {'num_epochs': 0}, 'config.num_epochs: 0 is not allowed; must be > 0'),
  ('darts', {'max_steps': -5}, 'config.max_steps: -5 is not allowed; must be >= -1'),
  ('darts', {'log_every_steps': 0}, 'config.log_every_steps: 0 is not allowed; must be > 0'),
  ('darts', {'checkpoint_every_steps': -1}, 'config.checkpoint_every_steps: -1 is not allowed'),
  ('darts', {'keep_checkpoints': 0}, 'config.keep_checkpoints: 0 is not allowed; must be > 0'),
  ('darts', {'eval_every_epochs': 0}, 'config.eval_every_epochs: 0 is not allowed; must be > 0'),
  ('darts', {'rng_impl': 'philox'}, "config.rng_impl: 'philox' is not allowed; allowed: ("),
  (
    'darts',
    {'hypergradient': 'second'},
    "config.hypergradient: unknown method 'second'; allowed: (",
  ),
  ('darts', {'order': 'random'}, "config.order: 'random' is not allowed; allowed: ("),
  ('darts', {'exact_mode': 'fwd'}, "config.exact_mode: 'fwd' is not allowed; allowed: ("),
  ('darts', {'fd_epsilon': 0.0}, 'config.fd_epsilon: 0.0 is not allowed; must be > 0'),
  ('darts', {'neumann_steps': -1}, 'config.neumann_steps: -1 is not allowed; must be >= 0'),
  ('darts', {'cg_steps': 0}, 'config.cg_steps: 0 is not allowed; must be > 0'),
  ('darts', {'weights_optim.lr': float('nan')}, 'config.weights_optim.lr: nan is not allowed'),
  ('darts', {'weights_optim.lr': -0.1}, 'config.weights_optim.lr: -0.1 is not allowed'),
  ('darts', {'weights_optim.lr_min': -1.0}, 'config.weights_optim.lr_min: -1.0 is not allowed'),
  ('darts', {'weights_optim.momentum': 1.0}, 'config.weights_optim.momentum: 1.0 is not allowed'),
  ('darts', {'weights_optim.weight_decay': -1.0}, 'config.weights_optim.weight_decay: -1.0 is'),
  ('darts', {'weights_optim.clip': -1.0}, 'config.weights_optim.clip: -1.0 is not allowed'),
  ('darts', {'alphas_optim.lr': float('inf')}, 'config.alphas_optim.lr: inf is not allowed'),
  ('darts', {'alphas_optim.b1': 1.5}, 'config.alphas_optim.b1: 1.5 is not allowed'),
  ('darts', {'alphas_optim.b2': -0.1}, 'config.alphas_optim.b2: -0.1 is not allowed'),
  ('darts', {'alphas_optim.weight_decay': -1.0}, 'config.alphas_optim.weight_decay: -1.0 is'),
  ('darts', {'alphas_optim.clip': -2.0}, 'config.alphas_optim.clip: -2.0 is not allowed'),
  ('darts', {'alphas_optim.warmup_epochs': -1}, 'config.alphas_optim.warmup_epochs: -1 is'),
  ('darts', {'data.batch_size': 0}, 'config.data.batch_size: 0 is not allowed; must be > 0'),
  ('darts', {'data.eval_examples': -1}, 'config.data.eval_examples: -1 is not allowed'),
  ('darts', {'data.train_portion': 1.5}, 'config.data.train_portion: 1.5 is not allowed'),
  ('darts', {'net.channels': 0}, 'config.net.channels: 0 is not allowed; must be > 0'),
  ('darts', {'net.layers': 0}, 'config.net.layers: 0 is not allowed; must be > 0'),
  ('darts', {'net.nodes': 0}, 'config.net.nodes: 0 is not allowed; must be > 0'),
  ('darts', {'net.multiplier': 9}, 'config.net.multiplier: 9 is not allowed'),
  ('darts', {'net.conv_impl': 'cuda'}, "config.net.conv_impl: 'cuda' is not allowed; allowed: ("),
  ('darts', {'space': 'enas'}, "config.space: 'enas' is not allowed; allowed: ("),
  ('darts', {'experiment': 'nope'}, "config.experiment: 'nope' is not allowed; allowed: ("),
  ('darts', {'darts_plus.max_skips': -1}, 'config.darts_plus.max_skips: -1 is not allowed'),
  ('darts', {'darts_plus.stable_epochs': -1}, 'config.darts_plus.stable_epochs: -1 is not'),
  ('darts', {'darts_minus.aux_start': -1.0}, 'config.darts_minus.aux_start: -1.0 is not'),
  ('pcdarts', {'pcdarts.k': 0}, 'config.pcdarts.k: 0 is not allowed'),
  ('pdarts', {'pdarts.drop_decay': -1.0}, 'config.pdarts.drop_decay: -1.0 is not allowed'),
  ('pdarts', {'pdarts.drop_rates': (0.1, 1.5, 0.2)}, 'config.pdarts.drop_rates'),
  ('pdarts', {'pdarts.max_skips': -1}, 'config.pdarts.max_skips: -1 is not allowed'),
  ('lpt', {'lpt.mode': 'both'}, "config.lpt.mode: 'both' is not allowed; allowed: ("),
  ('lpt', {'lpt.encoder': 'vgg'}, "config.lpt.encoder: 'vgg' is not allowed; allowed: ("),
  ('lpt', {'lpt.weight_lambda': -1.0}, 'config.lpt.weight_lambda: -1.0 is not allowed'),
  ('lpt', {'lpt.weight_gamma': -1.0}, 'config.lpt.weight_gamma: -1.0 is not allowed'),
  ('lpt', {'lpt.grid_examples': 0}, 'config.lpt.grid_examples: 0 is not allowed'),
  ('lpt', {'tester_optim.lr': 0.0}, 'config.tester_optim.lr: 0.0 is not allowed; must be > 0'),
  ('lpt', {'creator_optim.lr': -1.0}, 'config.creator_optim.lr: -1.0 is not allowed'),
  ('lpt', {'tester_optim.momentum': 2.0}, 'config.tester_optim.momentum: 2.0 is not allowed'),
  ('il', {'il.rounds': 0}, 'config.il.rounds: 0 is not allowed; must be > 0'),
  ('il', {'il.lam': -1.0}, 'config.il.lam: -1.0 is not allowed; must be >= 0'),
  ('il', {'il.tasks': 'digits_a'}, 'config.il.tasks'),
  ('mtl', {'mtl.train_tradeoff': -1.0}, 'config.mtl.train_tradeoff: -1.0 is not allowed'),
  ('mtl', {'mtl.val_tradeoff': float('nan')}, 'config.mtl.val_tradeoff: nan is not allowed'),
  ('mtl', {'mtl.tasks': ''}, 'config.mtl.tasks'),
  ('eval', {'genotype': 'NOPE'}, 'config.genotype: '),
  ('eval', {'genotype': '/nonexistent/genotype.json'}, 'config.genotype: '),
  ('eval', {'net.network': 'mobile'}, "config.net.network: 'mobile' is not allowed; allowed: ("),
  ('eval', {'optim.schedule': 'step'}, "config.optim.schedule: 'step' is not allowed; allowed"),
  ('eval', {'net.drop_path_prob': 1.0}, 'config.net.drop_path_prob: 1.0 is not allowed'),
  ('eval', {'label_smoothing': -0.1}, 'config.label_smoothing: -0.1 is not allowed'),
  ('eval', {'data.eval_batch_size': 0}, 'config.data.eval_batch_size: 0 is not allowed'),
  ('eval', {'net.auxiliary_weight': -1.0}, 'config.net.auxiliary_weight: -1.0 is not allowed'),
  ('eval', {'optim.decay_rate': 0.0}, 'config.optim.decay_rate: 0.0 is not allowed'),
  ('eval', {'data.cutout_length': -4}, 'config.data.cutout_length: -4 is not allowed'),
  ('ridge', {'ridge.dim': 0}, 'config.ridge.dim: 0 is not allowed; must be > 0'),
  ('ridge', {'ridge.noise': -1.0}, 'config.ridge.noise: -1.0 is not allowed; must be >= 0'),
  ('ridge', {'ridge.unroll_steps': 0}, 'config.ridge.unroll_steps: 0 is not allowed'),
  ('ridge', {'ridge.hyper_lr': float('-inf')}, 'config.ridge.hyper_lr: -inf is not allowed'),
  ('ridge', {'compilation_cache_dir': '/etc/hostname/xla'}, 'config.compilation_cache_dir: '),
  # Data: a dataset this machine lacks, a directory that is not there, a batch too big.
  ('darts', {'data.name': 'cifar10', 'data.data_dir': '/nonexistent_tfds'}, 'cifar10'),
  ('darts', {'data.name': 'array_dir:/nonexistent_arrays'}, 'array_dir:/nonexistent_arrays: not'),
  ('darts', {'data.batch_size': 100000}, 'config.data.batch_size: 100000 is not allowed; must'),
]


def _one_line(error) -> str:
  text = str(error)
  assert '\n' not in text, text
  return text


@pytest.mark.parametrize(
  'base,overrides,message', CONFIG_CASES, ids=[f'{b}-{",".join(o)}' for b, o, _ in CONFIG_CASES]
)
def test_a_bad_value_is_one_line_naming_it_and_no_workdir_appears(
  tmp_path, base, overrides, message
):
  workdir = tmp_path / 'run'
  with pytest.raises(cli.USER_ERRORS) as error:
    runner.run(_config(base, **overrides), str(workdir))
  assert _one_line(error.value).startswith(message) or message in str(error.value), error.value
  assert not workdir.exists()


def test_a_malformed_genotype_file_is_named(tmp_path):
  path = tmp_path / 'genotype.json'
  path.write_text('{"normal": [["sep_conv_3x3", 0]')  # cut short
  workdir = tmp_path / 'run'
  with pytest.raises(cli.USER_ERRORS) as error:
    runner.run(_config('eval', genotype=str(path)), str(workdir))
  assert _one_line(error.value).startswith('config.genotype: ')
  assert not workdir.exists()


# The workdir itself.


def _tree(path) -> dict:
  """Every file under `path` with its bytes and modification time (the lock file's bytes: a
  refused run takes the lock before it reads the workdir, and leaves it empty again)."""
  tree = {}
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      with open(full, 'rb') as f:
        mtime = None if name == workdir_lock.LOCK_FILE else os.stat(full).st_mtime_ns
        tree[os.path.relpath(full, path)] = (f.read(), mtime)
  return tree


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('finished') / 'run')
  runner.run(_config('ridge', num_epochs=2), workdir)
  return workdir


def test_a_workdir_that_is_a_file(tmp_path):
  path = tmp_path / 'file'
  path.write_text('mine')
  with pytest.raises(workdir_lock.WorkdirError) as error:
    runner.run(_config('ridge'), str(path))
  assert _one_line(error.value) == f'--workdir {path}: is a file, not a directory; give a directory'
  assert path.read_text() == 'mine'


def test_a_workdir_under_a_file(tmp_path):
  (tmp_path / 'file').write_text('mine')
  with pytest.raises(workdir_lock.WorkdirError, match='is a file, so it cannot be created'):
    runner.run(_config('ridge'), str(tmp_path / 'file' / 'run'))


def test_an_empty_workdir_name():
  with pytest.raises(workdir_lock.WorkdirError, match='^--workdir: empty'):
    runner.run(_config('ridge'), '')


def test_a_workdir_that_cannot_be_written(tmp_path, monkeypatch):
  # As root (CI) permission bits do not stop a write; the file system's refusal is what a
  # user on a read-only mount meets.
  def refuse(*args, **kwargs):
    raise PermissionError(13, 'Permission denied')

  monkeypatch.setattr(workdir_lock.os, 'makedirs', refuse)
  with pytest.raises(workdir_lock.WorkdirError) as error:
    runner.run(_config('ridge'), str(tmp_path / 'run'))
  assert _one_line(error.value).endswith('cannot be written (Permission denied); give another')
  assert not (tmp_path / 'run').exists()


def test_a_workdir_held_by_another_run(tmp_path):
  workdir = str(tmp_path / 'run')
  with workdir_lock.hold(workdir):
    before = _tree(workdir)
    with pytest.raises(workdir_lock.WorkdirBusyError) as error:
      runner.run(_config('ridge'), workdir)
    assert _tree(workdir) == before
  assert 'is in use by pid' in _one_line(error.value)


def test_a_finished_workdir_of_another_config_is_refused_untouched(finished_run):
  before = _tree(finished_run)
  with pytest.raises(cli.USER_ERRORS) as error:
    runner.run(_config('ridge', num_epochs=2, seed=1), finished_run)
  assert 'holds checkpoints of another config' in _one_line(error.value)
  assert 'seed: 0 -> 1' in str(error.value)
  assert _tree(finished_run) == before


def test_checkpoints_that_do_not_read_are_one_line_and_left_in_place(finished_run, tmp_path):
  workdir = str(tmp_path / 'copy')
  subprocess.run(['cp', '-a', finished_run, workdir], check=True)
  os.remove(os.path.join(workdir, 'summary.json'))  # so the run tries to restore
  steps = os.listdir(os.path.join(workdir, 'checkpoints'))
  for step in steps:  # every array of every checkpoint cut in half
    data = os.path.join(workdir, 'checkpoints', step, 'state', 'd')
    for name in os.listdir(data):
      with open(os.path.join(data, name), 'r+b') as f:
        f.truncate(os.path.getsize(os.path.join(data, name)) // 2)
  before = _tree(workdir)
  with pytest.raises(cli.USER_ERRORS) as error:
    runner.run(_config('ridge', num_epochs=2), workdir)
  assert _one_line(error.value).startswith('checkpoint: no checkpoint in ')
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == sorted(steps)
  after = _tree(workdir)
  assert {k: v for k, v in after.items() if k != 'config.json'} == {
    k: v for k, v in before.items() if k != 'config.json'
  }


# The command line: what flag parsing meets.

FLAG_CASES = [
  (['--config=configs/darts.py:quick', '--config.foo=1'], 'config.foo: no such field; --describe'),
  (
    ['--config=configs/darts.py:quick', '--config.weights_optim.lrr=1'],
    'config.weights_optim.lrr: no such field; did you mean config.weights_optim.lr',
  ),
  (
    ['--config=configs/darts.py:quick', '--config.momentum=0.5'],
    'config.momentum: no such field; did you mean config.weights_optim.momentum',
  ),
  (['--config=configs/nope.py'], '--config: configs/nope.py is not a file; configs beside it: '),
  (['--config=configs/darts.py:zzz'], "--config: configs/darts.py:zzz does not load: ValueError"),
]


@pytest.mark.parametrize('argv,message', FLAG_CASES, ids=[a[-1] for a, _ in FLAG_CASES])
def test_a_flag_error_is_one_line(argv, message, monkeypatch):
  monkeypatch.chdir(ROOT)
  line = cli.flag_error(['main', *argv], AttributeError('raw'))
  assert '\n' not in line and line.startswith(message), line
