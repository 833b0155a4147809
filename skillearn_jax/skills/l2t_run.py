"""Learning to Teach as experiments of the one training loop: teacher training, then teaching.

This module owns the protocol of the paper on top of `skills.l2t`'s math:
- the data layout (`layout`): `data.split` shuffled once (`data.split_seed`); the first
  `data.dev_examples` form the dev set (the reward's held-out accuracy, the best-loss
  feature), the test set is `data.test_split` (or, where that is '', the next
  `data.test_examples` of the same split), and the rest is cut in two halves: the teacher is
  trained on the first, the taught students learn on the second;
- stage 1, `teacher`: one loop step is one REINFORCE update of the teacher on
  `l2t.parallel_episodes` fresh students trained under `vmap` for T′ = `l2t.horizon` steps;
  it ends by writing `teacher.npz` (the policy and the drop ratio of its last episodes);
- stage 2, `student`: the frozen teacher (`l2t.teacher_path`) and the baselines NoTeach,
  Self-Paced and RandTeach (at the teacher's drop ratio) each train `l2t.seeds` fresh
  students (`teach_student`, on `teach_data` — the transfer settings) on the second half for
  `l2t.student_iterations` steps, all vmapped in one scan; one loop step is `l2t.chunk`
  student steps, so checkpoints land mid student-training. Test accuracy is recorded every
  `l2t.check_every` steps against examples used and iterations;
- `stages(config)` chains the two in one workdir (`l2t.stage` = ''), and `finish` writes the
  figure of the four methods, the teacher's drop ratio over training and the table of examples
  and iterations to τ (mean ± std over seeds) into plots/ and summary.json.
The score-function gradient is not a hypergradient method of the core: the reason is in
docs/l2t.md (a teacher step needs whole episodes of fresh students, not the unrolled steps of
one persistent student that a `core.Program` chain differentiates).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh
from matplotlib.figure import Figure

from skillearn_jax import config_check
from skillearn_jax import data as data_lib
from skillearn_jax.skills import base
from skillearn_jax.skills import l2t
from skillearn_jax.skills import l2t_students

STAGES = ('', 'teacher', 'student')
SPLITS = ('train', 'test', 'all')  # 'all': an array directory holding one unsplit set
TEACHER_FILE = 'teacher.npz'


# -- config checks ----------------------------------------------------------------------------
def _check_student(config, block: str) -> None:
  config_check.one_of(config, f'{block}.arch', l2t_students.ARCHS)
  config_check.one_of(config, f'{block}.optimizer', l2t_students.OPTIMIZERS)
  config_check.positive(config, f'{block}.lr')
  config_check.in_unit_interval(config, f'{block}.momentum')
  if config[block].arch == 'resnet':
    config_check.one_of(config, f'{block}.depth', l2t_students.RESNET_DEPTHS)
  if config[block].arch == 'mlp':
    hidden = config[block].hidden
    if not hidden or any(int(h) <= 0 for h in hidden):
      raise config_check.ConfigError(
        f'config.{block}.hidden: {tuple(hidden)!r} is not allowed; one or more widths > 0'
      )


def check_config(config) -> None:
  p = config.l2t
  config_check.one_of(config, 'l2t.stage', STAGES)
  if config.num_epochs != 1:
    raise config_check.ConfigError(
      f'config.num_epochs: {config.num_epochs!r} is not allowed; must be 1 (l2t counts its '
      'steps in l2t.teacher_steps and l2t.student_iterations)'
    )
  for field in ('batch_size', 'pool_factor', 'horizon', 'check_every', 'parallel_episodes'):
    config_check.positive(config, f'l2t.{field}')
  for field in ('teacher_steps', 'teacher_hidden', 'teacher_lr', 'student_iterations', 'chunk'):
    config_check.positive(config, f'l2t.{field}')
  config_check.positive(config, 'l2t.seeds')
  devices = jax.device_count()
  if p.parallel_episodes % devices:
    raise config_check.ConfigError(
      f'config.l2t.parallel_episodes: {p.parallel_episodes!r} is not allowed; must be a '
      f'multiple of the {devices} devices (each runs an equal share of the episodes)'
    )
  config_check.positive(config, 'l2t.loss_scale', allow_zero=True)
  config_check.positive(config, 'l2t.spl_ramp')
  config_check.in_unit_interval(config, 'l2t.teach_tau')
  for field in ('tau', 'baseline_decay', 'spl_start'):
    config_check.in_unit_interval(config, f'l2t.{field}')
  if not -1.0 <= p.rand_drop_ratio < 1.0:
    raise config_check.ConfigError(
      f'config.l2t.rand_drop_ratio: {p.rand_drop_ratio!r} is not allowed; must lie in [0, 1), '
      'or -1 for the teacher\'s own drop ratio'
    )
  config_check.one_of(config, 'l2t.teacher_optimizer', ('adam', 'sgd'))
  if not p.methods or any(m not in l2t.METHODS for m in p.methods):
    raise config_check.ConfigError(
      f'config.l2t.methods: {tuple(p.methods)!r} is not allowed; a non-empty subset of '
      f'{l2t.METHODS}'
    )
  for it, name in ((p.horizon, 'horizon'), (p.student_iterations, 'student_iterations')):
    if it % p.check_every:
      raise config_check.ConfigError(
        f'config.l2t.check_every: {p.check_every!r} is not allowed; must divide l2t.{name} ({it})'
      )
  if p.student_iterations % p.chunk:
    raise config_check.ConfigError(
      f'config.l2t.chunk: {p.chunk!r} is not allowed; must divide l2t.student_iterations '
      f'({p.student_iterations})'
    )
  if p.chunk % p.check_every:
    raise config_check.ConfigError(
      f'config.l2t.chunk: {p.chunk!r} is not allowed; must be a multiple of l2t.check_every '
      f'({p.check_every})'
    )
  if p.stage == 'student' and 'l2t' in p.methods and not p.teacher_path:
    raise config_check.ConfigError(
      "config.l2t.teacher_path: '' is not allowed with l2t.stage='student' and method 'l2t'; "
      'name a teacher.npz written by a teacher stage'
    )
  config_check.one_of(config, 'data.split', SPLITS)
  config_check.one_of(config, 'data.test_split', ('', *SPLITS))
  config_check.positive(config, 'data.split_seed', allow_zero=True)
  config_check.positive(config, 'data.dev_examples')
  for field in ('test_examples', 'train_examples'):
    config_check.positive(config, f'data.{field}', allow_zero=True)
  if not config.data.test_split and config.data.test_examples <= 0:
    raise config_check.ConfigError(
      "config.data.test_examples: must be > 0 when data.test_split is '' (the test set is "
      'then carved from data.split)'
    )
  _check_student(config, 'student')
  _check_student(config, 'teach_student')


# -- data -------------------------------------------------------------------------------------
def _arrays(source, indices):
  images, labels = source.get(indices)
  x = data_lib.sources.to_unit_float(images)
  x = (x - np.asarray(source.info.mean, np.float32)) / np.asarray(source.info.std, np.float32)
  return x.astype(np.float32), np.asarray(labels, np.int32)


def layout(d, name: str) -> dict:
  """{'teacher', 'student', 'dev', 'test': (x, y)} and 'num_classes' of dataset `name`."""
  data_dir = d.data_dir or None
  source = data_lib.build_source(name, d.split, data_dir=data_dir)
  perm = np.random.default_rng(d.split_seed).permutation(len(source))
  dev, rest = perm[: d.dev_examples], perm[d.dev_examples :]
  if d.test_split:
    test_source = data_lib.build_source(name, d.test_split, data_dir=data_dir)
    count = len(test_source) if d.test_examples <= 0 else min(d.test_examples, len(test_source))
    test = _arrays(test_source, np.arange(count))
  else:
    test, rest = _arrays(source, rest[: d.test_examples]), rest[d.test_examples :]
  half = len(rest) // 2
  teacher, student = rest[:half], rest[half:]
  if d.train_examples > 0:
    teacher, student = teacher[: d.train_examples], student[: d.train_examples]
  if min(len(teacher), len(student), len(dev)) < 1:
    raise config_check.ConfigError(
      f'config.data.dev_examples: {d.dev_examples!r} leaves no training examples of '
      f'{name!r} ({len(source)} in split {d.split!r})'
    )
  return {
    'teacher': _arrays(source, teacher),
    'student': _arrays(source, student),
    'dev': _arrays(source, dev),
    'test': test,
    'num_classes': source.info.num_classes,
  }


def settings(config, num_classes: int, *, stop_at_tau: bool, rand_drop: float = 0.0):
  p = config.l2t
  iterations = p.horizon if stop_at_tau else p.student_iterations
  return l2t.Settings(
    num_classes=num_classes,
    batch_size=p.batch_size,
    pool_size=p.batch_size * p.pool_factor,
    horizon=p.horizon,
    tau=p.tau,
    check_every=p.check_every,
    loss_scale=p.loss_scale or float(np.log(num_classes)),
    stop_at_tau=stop_at_tau,
    spl_start=p.spl_start,
    spl_ramp=p.spl_ramp,
    rand_drop=rand_drop,
    num_checks=iterations // p.check_every,
  )


def _mesh() -> Mesh:
  """The devices the students are spread over: every device on one axis, as the training
  loop's data-parallel mesh lays them out (each takes an equal share of the students)."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def _teacher_optimizer(p):
  return optax.adam(p.teacher_lr) if p.teacher_optimizer == 'adam' else optax.sgd(p.teacher_lr)


def _save_npz_atomic(path: str, **arrays) -> None:
  folder = os.path.dirname(path) or '.'
  with tempfile.NamedTemporaryFile(dir=folder, suffix='.npz', delete=False) as f:
    np.savez(f, **arrays)
  os.replace(f.name, path)


def load_teacher(path: str) -> tuple[dict, float]:
  """(policy parameters, the drop ratio of its last training episodes) of a teacher.npz."""
  if not os.path.exists(path):
    raise config_check.ConfigError(f'config.l2t.teacher_path: {path!r} does not exist')
  with np.load(path) as f:
    return {k: jnp.asarray(f[k]) for k in ('w1', 'b1', 'w2', 'b2')}, float(f['drop_ratio'])


# -- stage 1: the teacher ---------------------------------------------------------------------
def teacher_experiment(config) -> base.Experiment:
  p = config.l2t
  data = layout(config.data, config.data.name)
  model, optimizer = l2t_students.make_student(config.student, data['num_classes'])
  s = settings(config, data['num_classes'], stop_at_tau=True)
  task = l2t.Task(*map(jnp.asarray, (*data['teacher'], *data['dev'])))
  teacher_optimizer = _teacher_optimizer(p)
  dim = l2t.feature_dim(data['num_classes'])

  def init(key):
    theta = l2t.init_teacher(key, dim, p.teacher_hidden, p.keep_bias)
    zero = jnp.zeros((), jnp.float32)
    return l2t.TeacherState(
      step=jnp.zeros((), jnp.int32),
      theta=theta,
      opt_state=teacher_optimizer.init(theta),
      baseline=zero,
      baseline_count=jnp.zeros((), jnp.int32),
    )

  mesh = _mesh()

  def step(state, batch, key):
    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(batch['episode'])
    return l2t.teacher_update(
      model, optimizer, s, task, teacher_optimizer, p.baseline_decay, state, keys, mesh
    )

  episodes = np.arange(p.parallel_episodes, dtype=np.int32)
  last = {}  # the final metrics and the workdir, for the artifacts and the summary

  def prepare_workdir(workdir):
    last['path'] = os.path.join(os.path.abspath(workdir), TEACHER_FILE)

  def write_artifacts(state, workdir, history):
    del history
    theta = jax.device_get(state.theta)
    drop = last.get('teacher/drop_ratio', float('nan'))
    _save_npz_atomic(os.path.join(workdir, TEACHER_FILE), drop_ratio=drop, **theta)

  def summary(state, metrics):
    last.update(metrics)
    return {
      'stage': 'teacher',
      'teacher_path': last.get('path', TEACHER_FILE),
      'drop_ratio': metrics.get('teacher/drop_ratio'),
      'reward': metrics.get('teacher/reward'),
    }

  return base.Experiment(
    init=init,
    step=step,
    batches_at=lambda step: {'episode': episodes},
    steps_per_epoch=p.teacher_steps,
    progress_metrics=('teacher/reward', 'teacher/i_tau', 'teacher/drop_ratio'),
    write_artifacts=write_artifacts,
    prepare_workdir=prepare_workdir,
    summary=summary,
  )


# -- stage 2: teaching new students -----------------------------------------------------------
@flax.struct.dataclass
class TeachingState:
  step: jax.Array  # loop steps done: step · l2t.chunk student iterations
  students: l2t.Student  # every (method, seed) student, stacked


def student_experiment(config) -> base.Experiment:
  p = config.l2t
  name = config.data.teach_name or config.data.name
  data = layout(config.data, name)
  num_classes = data['num_classes']
  model, optimizer = l2t_students.make_student(config.teach_student, num_classes)
  dim = l2t.feature_dim(num_classes)
  if 'l2t' in p.methods:
    theta, teacher_drop = load_teacher(p.teacher_path)
    if theta['w1'].shape[0] != dim:
      raise config_check.ConfigError(
        f'config.l2t.teacher_path: the teacher reads {theta["w1"].shape[0]} features but '
        f'{name!r} has {num_classes} classes ({dim} features); teach a dataset with as many '
        'classes'
      )
  else:
    theta, teacher_drop = l2t.init_teacher(jax.random.key(0), dim, p.teacher_hidden), 0.0
  drop = teacher_drop if p.rand_drop_ratio < 0 else p.rand_drop_ratio
  drop = float(np.clip(np.nan_to_num(drop), 0.0, 0.99))
  s = settings(config, num_classes, stop_at_tau=False, rand_drop=drop)
  tau = p.teach_tau or p.tau
  task = l2t.Task(*map(jnp.asarray, (*data['student'], *data['dev'], *data['test'])))
  methods = [l2t.METHODS.index(m) for m in p.methods]
  method_ids = jnp.asarray(np.repeat(methods, p.seeds), jnp.int32)
  seed_ids = np.tile(np.arange(p.seeds), len(methods))
  # Students of one seed share their init and their candidate pools across methods (common
  # random numbers), whatever the loop's chunking: keys come from the config's seed only, and
  # are threefry whatever config.rng_impl says (see `l2t.threefry_key`).
  base_key = jax.random.fold_in(jax.random.key(config.seed, impl='threefry2x32'), 2)
  seed_keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(seed_ids))
  sample_x = task.train_x[:1]
  checks = p.chunk // p.check_every

  def init(key):
    del key
    students = jax.vmap(
      lambda k: l2t.init_student(model, optimizer, s, sample_x, theta, jax.random.fold_in(k, 0))
    )(seed_keys)
    return TeachingState(step=jnp.zeros((), jnp.int32), students=students)

  mesh = _mesh()
  # The (method, seed) students split over the devices when they divide evenly; else each
  # device trains them all (the loop keeps the state replicated either way).
  spread = mesh if len(seed_ids) % mesh.size == 0 else None

  def step(state, batch, key):
    del batch, key
    start = state.step * p.chunk

    def train(start, method_ids, seed_keys, students):
      return jax.vmap(
        lambda m, k, st: l2t.run_checks(
          model, optimizer, s, task, theta, m, jax.random.fold_in(k, 1), st, start, checks
        )
      )(method_ids, seed_keys, students)

    students = l2t.over_devices(train, spread, shared=1)(
      start, method_ids, seed_keys, state.students
    )
    done = (start + p.chunk) // p.check_every
    metrics = {}
    for m in p.methods:
      rows = method_ids == l2t.METHODS.index(m)
      acc = jnp.where(done > 0, students.curve_acc[:, jnp.maximum(done - 1, 0)], jnp.nan)
      metrics[f'test/{m}_accuracy'] = jnp.sum(jnp.where(rows, acc, 0.0)) / p.seeds
      metrics[f'train/{m}_examples'] = jnp.sum(jnp.where(rows, students.used, 0.0)) / p.seeds
    return TeachingState(step=state.step + 1, students=students), metrics

  def summary(state, metrics):
    del metrics
    st = jax.device_get(state.students)
    curves = {
      m: {
        'accuracy': st.curve_acc[np.asarray(method_ids) == l2t.METHODS.index(m)].tolist(),
        'examples': st.curve_used[np.asarray(method_ids) == l2t.METHODS.index(m)].tolist(),
        'considered': st.curve_considered[np.asarray(method_ids) == l2t.METHODS.index(m)].tolist(),
      }
      for m in p.methods
    }
    return {
      'stage': 'student',
      'dataset': name,
      'student': config.teach_student.arch,
      'tau': tau,
      'check_every': p.check_every,
      'rand_drop_ratio': drop,
      'table': to_tau_table(curves, tau, p.check_every),
      'curves': curves,
    }

  def write_artifacts(state, workdir, history):
    del history
    out = summary(state, {})
    os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
    plot_methods(out['curves'], p.check_every, tau, os.path.join(workdir, 'plots', 'teaching.png'))

  return base.Experiment(
    init=init,
    step=step,
    batches_at=lambda step: {'student': np.zeros((mesh.size,), np.int32)},  # a row a device
    steps_per_epoch=p.student_iterations // p.chunk,
    progress_metrics=('test/',),
    write_artifacts=write_artifacts,
    summary=summary,
  )


# -- outputs ----------------------------------------------------------------------------------
def first_reach(accuracy, tau: float):
  """The index of the first check whose accuracy reaches τ, or None."""
  hits = np.flatnonzero(np.nan_to_num(np.asarray(accuracy), nan=-1.0) >= tau)
  return int(hits[0]) if hits.size else None


def _mean_std(values):
  if not values:
    return {'mean': None, 'std': None}
  return {'mean': float(np.mean(values)), 'std': float(np.std(values))}


def to_tau_table(curves: dict, tau: float, check_every: int) -> dict:
  """Per method: iterations, examples trained on and candidates drawn to reach τ, mean ± std
  over the seeds that reached it, how many did, and the final accuracy mean ± std."""
  table = {}
  for method, c in curves.items():
    hits = [first_reach(a, tau) for a in c['accuracy']]
    seeds = [(i, k) for i, k in enumerate(hits) if k is not None]
    table[method] = {
      'reached': f'{len(seeds)}/{len(hits)}',
      'iterations': _mean_std([(k + 1) * check_every for _, k in seeds]),
      'examples': _mean_std([c['examples'][i][k] for i, k in seeds]),
      'considered': _mean_std([c['considered'][i][k] for i, k in seeds]),
      'final_accuracy': _mean_std([float(a[-1]) for a in c['accuracy']]),
    }
  return table


def table_text(table: dict) -> str:
  def fmt(stat):
    return '—' if stat['mean'] is None else f"{stat['mean']:.0f} ± {stat['std']:.0f}"

  lines = ['| method | reached τ | iterations to τ | examples to τ | drawn to τ | final accuracy |']
  lines.append('|---|---|---|---|---|---|')
  for m, row in table.items():
    acc = row['final_accuracy']
    lines.append(
      f"| {m} | {row['reached']} | {fmt(row['iterations'])} | {fmt(row['examples'])} | "
      f"{fmt(row['considered'])} | "
      f"{acc['mean']:.4f} ± {acc['std']:.4f} |"
    )
  return '\n'.join(lines)


LABELS = {'l2t': 'L2T', 'noteach': 'NoTeach', 'spl': 'Self-Paced', 'randteach': 'RandTeach'}


def plot_methods(curves: dict, check_every: int, tau: float, path: str) -> None:
  """Held-out accuracy (mean over seeds, band ± std) against examples used and iterations."""
  fig = Figure(figsize=(11, 4.2))
  by_examples, by_iterations = fig.subplots(1, 2, sharey=True)
  for method, c in curves.items():
    acc = np.asarray(c['accuracy'], np.float64)
    with warnings.catch_warnings():  # checks not reached yet (a run cut by max_steps): NaN
      warnings.simplefilter('ignore', RuntimeWarning)
      mean, std = np.nanmean(acc, 0), np.nanstd(acc, 0)
    iterations = check_every * np.arange(1, acc.shape[1] + 1)
    examples = np.mean(np.asarray(c['examples'], np.float64), 0)
    for ax, x in ((by_examples, examples), (by_iterations, iterations)):
      (line,) = ax.plot(x, mean, label=LABELS[method])
      ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  for ax, label in ((by_examples, 'training examples used'), (by_iterations, 'student iterations')):
    ax.axhline(tau, color='gray', linestyle=':', linewidth=1)
    ax.set_xscale('log')  # the methods part early; a linear axis squeezes that into a corner
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  by_examples.set_ylabel('test accuracy (mean ± std over seeds)')
  by_examples.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_drop_ratio(records: list, path: str) -> None:
  """The teacher's drop ratio (and mean reward) per REINFORCE step."""
  steps = [r['step'] for r in records if 'teacher/drop_ratio' in r]
  fig = Figure(figsize=(6, 3.6))
  ax = fig.add_subplot()
  ax.plot(steps, [r['teacher/drop_ratio'] for r in records if 'teacher/drop_ratio' in r])
  ax.set_xlabel('teacher step (a batch of parallel episodes)')
  ax.set_ylabel('drop ratio of considered candidates')
  ax.grid(alpha=0.3)
  twin = ax.twinx()
  twin.plot(steps, [r['teacher/reward'] for r in records if 'teacher/drop_ratio' in r], 'C1--')
  twin.set_ylabel('mean reward −log(i_τ/T′)', color='C1')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _read_jsonl(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# -- the experiment ---------------------------------------------------------------------------
def build(config) -> base.Experiment:
  """The stage `l2t.stage` names ('teacher' or 'student'; '' runs as `stages`)."""
  if config.l2t.stage == 'student':
    return student_experiment(config)
  return teacher_experiment(config)


def stage_config(config, stage: str, teacher_path: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  c.l2t.stage = stage
  if teacher_path:
    c.l2t.teacher_path = teacher_path
  return c


def stages(config) -> base.Stages | None:
  """Teacher training then teaching, chained in one workdir (`l2t.stage` = ''); the second
  stage reads the teacher the first one's summary names."""
  if config.l2t.stage:
    return None

  def config_for(index, earlier):
    if index == 0:
      return stage_config(config, 'teacher')
    return stage_config(config, 'student', earlier[0]['teacher_path'])

  def finish(summaries, workdir, write):
    teacher, student = summaries
    summary = {
      'teacher': teacher,
      'student': student,
      'table': student['table'],
      'final_metrics': student['final_metrics'],
    }
    if write:
      plots = os.path.join(workdir, 'plots')
      os.makedirs(plots, exist_ok=True)
      plot_methods(
        student['curves'],
        student['check_every'],
        student['tau'],
        os.path.join(plots, 'teaching.png'),
      )
      records = _read_jsonl(os.path.join(workdir, 'stage_1', 'metrics.jsonl'))
      summary['drop_ratio_history'] = [
        [r['step'], r['teacher/drop_ratio']] for r in records if 'teacher/drop_ratio' in r
      ]
      plot_drop_ratio(records, os.path.join(plots, 'drop_ratio.png'))
    print(table_text(student['table']), flush=True)
    return summary

  return base.Stages(count=2, config_for=config_for, finish=finish)
