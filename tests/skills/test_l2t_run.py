"""Learning to Teach through the runner: the two stages chained, resume mid teacher-training and
mid student-training equal to an uninterrupted run, tfds mock data, bad input in one line."""

import json
import os
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import l2t as l2t_config
from skillearn_jax import config_check
from skillearn_jax import skills
from skillearn_jax.run import runner
from skillearn_jax.skills import l2t_run
from tests.conftest import XLA_CACHE_DIR, on_host_devices


def tiny(variant='quick', **overrides):
  c = l2t_config.get_config(variant)
  c.compilation_cache_dir = XLA_CACHE_DIR
  c.checkpoint_every_steps = 1
  c.data.dev_examples = 100
  c.data.train_examples = 200
  c.data.test_examples = 100
  c.student.hidden = (8,)
  c.teach_student.hidden = (8,)
  c.l2t.update(dict(batch_size=8, horizon=20, check_every=5, teacher_steps=3, parallel_episodes=2))
  c.l2t.update(dict(student_iterations=20, chunk=5, seeds=2, tau=0.5))
  for field, value in overrides.items():
    block, _, name = field.rpartition('.')
    (c[block] if block else c)[name] = value
  return c


def _teacher(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def test_two_stages_run_and_resume_equal_an_uninterrupted_run(tmp_path):
  whole = runner.run(tiny(), str(tmp_path / 'whole'))
  assert set(whole['table']) == {'l2t', 'noteach', 'spl', 'randteach'}
  curves = whole['student']['curves']
  assert np.asarray(curves['noteach']['accuracy']).shape == (2, 4)
  # NoTeach trains on M examples each step: 5 steps between checks.
  np.testing.assert_allclose(curves['noteach']['examples'], [[40, 80, 120, 160]] * 2)
  for name in ('teaching.png', 'drop_ratio.png'):
    assert os.path.getsize(tmp_path / 'whole' / 'plots' / name) > 1000
  with open(tmp_path / 'whole' / 'summary.json') as f:
    assert json.load(f)['table']['l2t']['reached'].endswith('/2')

  # Stopped after 2 of 3 teacher steps, then after 3 of 4 student chunks, then finished.
  cut = str(tmp_path / 'cut')
  runner.run(tiny(max_steps=2), cut)
  assert not os.path.exists(os.path.join(cut, 'stage_2'))
  assert runner.run(tiny(max_steps=3), cut)['steps'] == 3
  assert os.path.exists(os.path.join(cut, 'stage_2', 'checkpoints', '3'))
  resumed = runner.run(tiny(), cut)
  a = _teacher(tmp_path / 'whole' / 'stage_1' / 'teacher.npz')
  b = _teacher(os.path.join(cut, 'stage_1', 'teacher.npz'))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])
  assert resumed['student']['curves'] == whole['student']['curves']
  assert resumed['table'] == whole['table']


@pytest.mark.parametrize(
  'field,value,match',
  [
    ('l2t.stage', 'both', "config.l2t.stage: 'both' is not allowed"),
    ('l2t.chunk', 7, 'config.l2t.chunk: 7 is not allowed; must divide'),
    ('l2t.tau', 1.5, 'config.l2t.tau: 1.5 is not allowed'),
    ('l2t.methods', ('l2t', 'oracle'), 'config.l2t.methods'),
    ('l2t.parallel_episodes', 0, 'config.l2t.parallel_episodes: 0'),
    ('l2t.pool_factor', 0, 'config.l2t.pool_factor: 0'),
    ('l2t.rand_drop_ratio', 1.0, 'config.l2t.rand_drop_ratio: 1.0'),
    ('l2t.teacher_optimizer', 'rmsprop', 'config.l2t.teacher_optimizer'),
    ('l2t.check_every', 3, 'config.l2t.check_every: 3 is not allowed; must divide'),
    ('student.arch', 'vit', "config.student.arch: 'vit'"),
    ('teach_student.optimizer', 'lbfgs', "config.teach_student.optimizer: 'lbfgs'"),
    ('student.hidden', (), 'config.student.hidden'),
    ('num_epochs', 2, 'config.num_epochs: 2 is not allowed'),
    ('data.split', 'validation', "config.data.split: 'validation' is not allowed"),
    ('data.test_examples', -1, 'config.data.test_examples: -1 is not allowed'),
    ('l2t.stage', 'student', "config.l2t.teacher_path: '' is not allowed"),
  ],
)
def test_bad_values_are_refused_in_one_line_naming_the_field(field, value, match):
  with pytest.raises(config_check.ConfigError, match=match) as error:
    skills.check(tiny(**{field: value}))
  assert '\n' not in str(error.value)


def test_a_resnet_depth_must_be_6n_plus_2():
  config = tiny(**{'teach_student.arch': 'resnet', 'teach_student.depth': 33})
  with pytest.raises(config_check.ConfigError, match='config.teach_student.depth: 33'):
    skills.check(config)


def test_a_missing_teacher_file_is_named(tmp_path):
  config = tiny(**{'l2t.stage': 'student', 'l2t.teacher_path': str(tmp_path / 'none.npz')})
  with pytest.raises(config_check.ConfigError, match='config.l2t.teacher_path: .*does not exist'):
    runner.run(config, str(tmp_path / 'run'))


def test_variants_build_and_mnist_and_cifar10_run_on_mock_data(tmp_path):
  for variant in l2t_config.VARIANTS:
    skills.check(l2t_config.get_config(variant))
  with pytest.raises(ValueError, match='unknown variant'):
    l2t_config.get_config('imdb')
  small = dict(batch_size=4, horizon=4, check_every=2, teacher_steps=1, parallel_episodes=1)
  small.update(student_iterations=4, chunk=4, seeds=1, tau=0.5)
  with tfds.testing.mock_data(num_examples=24):
    # The transfer across datasets: an MNIST MLP teacher teaching CIFAR-10 ResNet students.
    config = tiny('transfer_data')
    config.data.data_dir = str(tmp_path / 'tfds')
    config.data.update(dev_examples=4, test_examples=4, train_examples=0)
    config.student.hidden = (8,)
    config.teach_student.depth = 8
    config.l2t.update(small)
    summary = runner.run(config, str(tmp_path / 'transfer'))
    layout = l2t_run.layout(config.data, 'cifar10')
  assert summary['student']['dataset'] == 'cifar10' and summary['student']['student'] == 'resnet'
  assert 0.0 <= summary['table']['l2t']['final_accuracy']['mean'] <= 1.0
  assert layout['teacher'][0].shape[1:] == (32, 32, 3) and layout['num_classes'] == 10


TWO_DEVICES = textwrap.dedent('''
    import json
    from skillearn_jax import config_check
    from skillearn_jax.run import runner
    from skillearn_jax.skills import l2t_run
    from tests.skills.test_l2t_run import tiny
    try:
      l2t_run.check_config(tiny(**{{'l2t.parallel_episodes': 3}}))
      refused = ''
    except config_check.ConfigError as e:
      refused = str(e)
    out = runner.run(tiny(), {workdir!r})
    print('RESULT ' + json.dumps({{'table': out['table'], 'refused': refused}}))
''')


def test_both_stages_on_two_host_devices_give_the_one_device_table(tmp_path):
  """With a CPU's cores as two host devices the teacher's episodes and the taught students are
  split over them; the run's table is the one-device run's, and an episode count the devices
  cannot share is refused in one line."""
  got = on_host_devices(TWO_DEVICES.format(workdir=str(tmp_path / 'two')))
  assert got['refused'].startswith('config.l2t.parallel_episodes: 3 is not allowed; must be a ')
  assert '2 devices' in got['refused']
  one = runner.run(tiny(), str(tmp_path / 'one'))
  assert got['table'] == json.loads(json.dumps(one['table']))
