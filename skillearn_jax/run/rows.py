"""A paper row as runs: seeds x search -> the chosen genotypes' evaluations -> the table.

This module owns the row's plan and its execution. A row config (configs/rows.py) names the
search config, the evaluation config, the seeds and how the evaluated genotypes are chosen;
`check_row` refuses a bad one before anything is written (naming the field), `prepare_root`
records it in ROOT/row.json and refuses a root made by another row, `run_row` runs every search
(ROOT/search/seed_K), then every evaluation (ROOT/eval/seed_K) of its genotype, each an
ordinary workdir run by `runner.run` as a submitit job (`local`: N at a time on this machine;
`slurm`: job arrays with the row's resources; `inline`: one after another in this process). A run whose
summary.json says complete is not run again; any other resumes from its checkpoints, so
rerunning the command after a failure or a kill resubmits only what is left.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import time
from typing import Callable, Optional

import ml_collections
import submitit

from skillearn_jax import config_check
from skillearn_jax.run import writers

ROW_FILE = 'row.json'
SELECTION_FILE = 'selection.json'
SELECTIONS = ('each', 'best_by_search_val')
EXECUTORS = ('local', 'slurm', 'inline')
# Fields a root's row.json may differ in: the resources, the queue and the published figures
# (a corrected figure), not what is computed.
MAY_CHANGE = ('resources', 'slurm', 'published')
# Evaluation datasets a search's genotype may go to: its own family (the cell was searched on
# images of that size and channels) or the papers' transfer, CIFAR -> ImageNet.
FAMILIES = {
  'digits': 'digits 8x8 grayscale',
  'digits_a': 'digits 8x8 grayscale',
  'digits_b': 'digits 8x8 grayscale',
  'cifar10': 'CIFAR 32x32 RGB',
  'cifar100': 'CIFAR 32x32 RGB',
  'imagenet2012': 'ImageNet RGB',
}
TRANSFERS = {('CIFAR 32x32 RGB', 'ImageNet RGB')}


class RowError(RuntimeError):
  """A run of the row failed; rerunning the command resubmits what is left."""


# -- configs ---------------------------------------------------------------------
def load_config(spec: str, field: str) -> ml_collections.ConfigDict:
  """`get_config(VARIANT)` of 'FILE.py[:VARIANT]' (the form --config takes)."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise config_check.ConfigError(f'{field}: {spec!r}: no config file {path!r}')
  module_spec = importlib.util.spec_from_file_location(f'_row_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    return module.get_config(arg) if arg else module.get_config()
  except ValueError as error:
    raise config_check.ConfigError(f'{field}: {error}') from None


def apply_overrides(config, overrides, field: str, path: str = '') -> None:
  """Sets every leaf of `overrides` on `config`, refusing a field `config` does not have."""
  for key, value in overrides.items():
    name = f'{path}{key}'
    if key not in config:
      raise config_check.ConfigError(f'{field}.{name}: the config has no field {name!r}')
    if hasattr(value, 'items'):
      apply_overrides(config[key], value, field, f'{name}.')
    else:
      config[key] = value


def run_config(row, kind: str, seed: int, genotype: str = 'DARTS_V2'):
  """The config of one run: the row's search or evaluation config, its overrides, the seed
  (and for an evaluation the genotype)."""
  block = row.search if kind == 'search' else row.evaluation
  field = f'row.{"search" if kind == "search" else "evaluation"}'
  config = load_config(block.config, f'{field}.config')
  config.unlock()
  apply_overrides(config, block.overrides, f'{field}.overrides')
  config.seed = seed
  if kind == 'eval':
    config.genotype = genotype
  return config


def _seeds(row, field: str, allow_empty: bool) -> tuple:
  seeds = tuple(row[field])
  if not seeds and not allow_empty:
    raise config_check.ConfigError(f'row.{field}: empty; give at least one seed, e.g. 0,1')
  for seed in seeds:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
      raise config_check.ConfigError(
        f'row.{field}: {seed!r} is not allowed; seeds are non-negative integers'
      )
  repeated = sorted({s for s in seeds if seeds.count(s) > 1})
  if repeated:
    raise config_check.ConfigError(
      f'row.{field}: {seeds!r} repeats {tuple(repeated)}; each seed once'
    )
  return seeds


def eval_seeds(row) -> tuple:
  """The evaluations' seeds: the searches' for 'each', `eval_seeds` (or the searches') for
  'best_by_search_val'."""
  if row.selection == 'each':
    return tuple(row.seeds)
  return tuple(row.eval_seeds) or tuple(row.seeds)


def searched_datasets(config) -> tuple:
  """The datasets a search config searches on (IL / MTL: every task)."""
  for block in ('il', 'mtl'):
    if block in config and 'tasks' in config[block]:
      return tuple(t.strip() for t in config[block].tasks.split(','))
  return (config.data.name,)


def check_fit(search_config, eval_config) -> None:
  """Refuses an evaluation dataset the searched cell does not fit (other image size or
  channels): the same dataset family as a searched one, or the papers' CIFAR -> ImageNet."""
  searched = searched_datasets(search_config)
  target = eval_config.data.name
  if target in searched:
    return
  family = lambda name: FAMILIES.get(name, name)
  if any(family(s) == family(target) or (family(s), family(target)) in TRANSFERS for s in searched):
    return
  allowed = sorted(
    {
      d
      for d, f in FAMILIES.items()
      for s in searched
      if f == family(s) or (family(s), f) in TRANSFERS
    }
    | set(searched)
  )
  raise config_check.ConfigError(
    f'row.evaluation: data.name {target!r} ({family(target)}) does not fit a cell searched on '
    f'{", ".join(searched)} ({family(searched[0])}); allowed: {tuple(allowed)}'
  )


def check_row(row) -> None:
  """Refuses a bad row before anything is written: seeds, selection, both configs (checked as
  the runner checks them) and the evaluation's fit to the searched dataset."""
  from skillearn_jax import skills  # pylint: disable=g-import-not-at-top (imports jax)

  _seeds(row, 'seeds', allow_empty=False)
  _seeds(row, 'eval_seeds', allow_empty=True)
  if row.selection not in SELECTIONS:
    raise config_check.ConfigError(
      f'row.selection: {row.selection!r} is not allowed; allowed: {SELECTIONS}'
    )
  if row.selection == 'each' and tuple(row.eval_seeds):
    raise config_check.ConfigError(
      "row.eval_seeds: only for selection 'best_by_search_val' (with 'each' every search's "
      'genotype is evaluated with its own seed); leave it empty'
    )
  search = run_config(row, 'search', row.seeds[0])
  evaluation = run_config(row, 'eval', eval_seeds(row)[0])
  for field, config in (('row.search', search), ('row.evaluation', evaluation)):
    try:
      skills.check(config)
    except config_check.ConfigError as error:
      raise config_check.ConfigError(f'{field} ({row[field[4:]].config}): {error}') from None
  if evaluation.experiment != 'eval_cell':
    raise config_check.ConfigError(
      f'row.evaluation.config: {row.evaluation.config!r} runs {evaluation.experiment!r}; '
      "an evaluation config runs 'eval_cell' (e.g. configs/eval_cifar.py)"
    )
  check_fit(search, evaluation)


def _flat(d, prefix=''):
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def row_record(row) -> dict:
  """The row as ROOT/row.json holds it (plain JSON)."""
  return json.loads(json.dumps(row.to_dict(), default=list))


def prepare_root(row, root: str) -> None:
  """Records the row in ROOT/row.json, or refuses a root whose row.json is another row (its
  `MAY_CHANGE` fields may differ)."""
  record = row_record(row)
  path = os.path.join(root, ROW_FILE)
  if os.path.exists(path):
    with open(path) as f:
      held = json.load(f)
    old, new = _flat(held), _flat(record)
    changed = sorted(
      k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith(MAY_CHANGE)
    )
    if changed:
      shown = ', '.join(f'{k} ({old.get(k)!r} -> {new.get(k)!r})' for k in changed[:4])
      raise config_check.ConfigError(
        f'--root: {root} holds the runs of row {held.get("name")!r}; this row differs in '
        f'{shown}{" ..." if len(changed) > 4 else ""}; use another --root'
      )
  elif os.path.isdir(root) and any(
    os.path.exists(os.path.join(root, d)) for d in ('search', 'eval')
  ):
    raise config_check.ConfigError(
      f'--root: {root} holds runs but no {ROW_FILE}; use another --root'
    )
  os.makedirs(root, exist_ok=True)
  writers.write_json_atomic(path, record)


# -- runs ------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
  kind: str  # 'search' | 'eval'
  seed: int
  workdir: str
  config: dict

  @property
  def label(self) -> str:
    return f'{self.kind} seed {self.seed}'


def read_summary(workdir: str) -> Optional[dict]:
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_complete(workdir: str) -> bool:
  """A run with nothing left to do: its summary says complete (a run of stages writes its
  summary only once every stage is)."""
  summary = read_summary(workdir)
  return bool(summary) and bool(summary.get('complete', 'stages' in summary))


def search_runs(row, root: str) -> list[Run]:
  return [
    Run(
      'search',
      seed,
      os.path.join(root, 'search', f'seed_{seed}'),
      run_config(row, 'search', seed).to_dict(),
    )
    for seed in row.seeds
  ]


def search_score(summary: dict, metric: str) -> float:
  """The search's validation score: `metric` of its final metrics, or the mean of its
  eval/*accuracy metrics when `metric` is ''."""
  final = summary.get('final_metrics', {})
  if metric:
    if metric not in final:
      raise config_check.ConfigError(
        f'row.selection_metric: {metric!r} is not a final metric of the search; it has '
        f'{tuple(sorted(final))}'
      )
    return float(final[metric])
  values = [v for k, v in final.items() if k.startswith('eval/') and k.endswith('accuracy')]
  return float(sum(values) / len(values)) if values else -math.inf


def select(row, root: str) -> dict:
  """seed of each evaluation -> the genotype.json it evaluates (and why), from the finished
  searches."""
  searches = {seed: os.path.join(root, 'search', f'seed_{seed}') for seed in row.seeds}
  genotype = lambda seed: os.path.abspath(os.path.join(searches[seed], 'genotype.json'))
  if row.selection == 'each':
    return {'selection': 'each', 'genotypes': {str(s): genotype(s) for s in row.seeds}}
  scores = {s: search_score(read_summary(d), row.selection_metric) for s, d in searches.items()}
  best = max(scores, key=lambda s: (scores[s], -s))
  return {
    'selection': 'best_by_search_val',
    'metric': row.selection_metric or 'mean of eval/*accuracy',
    'scores': {str(s): v for s, v in scores.items()},
    'best_search_seed': best,
    'genotypes': {str(s): genotype(best) for s in eval_seeds(row)},
  }


def eval_runs(row, root: str, selection: dict) -> list[Run]:
  return [
    Run(
      'eval',
      seed,
      os.path.join(root, 'eval', f'seed_{seed}'),
      run_config(row, 'eval', seed, selection['genotypes'][str(seed)]).to_dict(),
    )
    for seed in eval_seeds(row)
  ]


# -- jobs ------------------------------------------------------------------------
class RunJob(submitit.helpers.Checkpointable):
  """One run as a submitit job: `runner.run(config, workdir)`. Cut by its time limit or
  preempted, submitit requeues it (`Checkpointable`) and it resumes from its checkpoint."""

  def __call__(self, config: dict, workdir: str) -> dict:
    from skillearn_jax.run import xla_flags  # pylint: disable=g-import-not-at-top

    xla_flags.apply_defaults()  # before JAX starts its backend in this process
    from skillearn_jax.run import runner  # pylint: disable=g-import-not-at-top

    summary = runner.run(ml_collections.ConfigDict(config), workdir)
    return {'complete': bool(summary.get('complete', 'stages' in summary))}


def executor_parameters(row, kind: str, jobs: int) -> dict:
  """submitit's `update_parameters` for `kind`: the row's resources, and on SLURM its queue
  and the array's parallelism."""
  r = row.resources
  params = dict(
    name=f'row-{row.name.replace(",", "-")}',
    timeout_min=int(r.time_min),
    gpus_per_node=int(r.gpus_per_node),
    cpus_per_task=int(r.cpus_per_task),
    nodes=1,
    tasks_per_node=1,
  )
  if r.mem_gb:
    params['mem_gb'] = r.mem_gb
  if kind == 'slurm':
    s = row.slurm
    for name in ('partition', 'account', 'qos', 'constraint'):
      if s[name]:
        params[f'slurm_{name}'] = s[name]
    params['slurm_array_parallelism'] = int(jobs or s.array_parallelism)
    if s.setup:
      params['slurm_setup'] = list(s.setup)
  return params


def make_executor(row, kind: str, folder: str, jobs: int):
  """submitit's executor of `kind` with the row's requests; None for 'inline'."""
  if kind not in EXECUTORS:
    raise config_check.ConfigError(f'--executor: {kind!r} is not allowed; allowed: {EXECUTORS}')
  if kind == 'inline':  # submitit's own 'debug' executor stops in pdb on a failure
    return None
  executor = submitit.AutoExecutor(
    folder=folder,
    cluster=kind,
    slurm_max_num_timeout=int(row.resources.max_requeues),
    local_max_num_timeout=int(row.resources.max_requeues),
  )
  params = executor_parameters(row, kind, jobs)
  if kind == 'local':  # it takes no cpu, memory or node requests
    params = {k: params[k] for k in ('name', 'timeout_min', 'gpus_per_node')}
  executor.update_parameters(**params)
  return executor


def submit(executor, runs: list[Run], job: Callable) -> list:
  """Submits `runs` at once (on SLURM one job array); returns their jobs."""
  if len(runs) == 1 or executor.cluster != 'slurm':
    return [executor.submit(job, run.config, run.workdir) for run in runs]
  with executor.batch():
    jobs = [executor.submit(job, run.config, run.workdir) for run in runs]
  return jobs


def _last_line(error: Exception) -> str:
  lines = [l for l in str(error).strip().splitlines() if l.strip()]
  return lines[-1].strip() if lines else type(error).__name__


def _log(job) -> str:
  return str(job.paths.stderr)


def execute(
  runs: list[Run], executor, *, jobs: int, job: Callable, poll_s: float = 1.0, say=print
) -> list[str]:
  """Runs `runs` and waits: on SLURM all submitted at once (the array runs its parallelism),
  otherwise at most `jobs` at a time (at least one). Returns the failures, one line each."""
  failures: list[str] = []
  if executor is None:  # inline
    for run in runs:
      say(f'{run.label}: {run.workdir}')
      try:
        job(run.config, run.workdir)
        say(f'{run.label}: done')
      except Exception as error:  # pylint: disable=broad-except  (a run's failure, reported)
        failures.append(f'{run.label} failed: {_last_line(error)}')
        say(failures[-1])
    return failures
  pending = list(runs)
  running: list = []
  at_once = len(runs) if executor.cluster == 'slurm' else max(jobs, 1)
  while pending or running:
    room = at_once - len(running)
    if room > 0 and pending:
      batch, pending = pending[:room], pending[room:]
      for run, submitted in zip(batch, submit(executor, batch, job)):
        say(f'{run.label}: job {submitted.job_id} -> {run.workdir} (log {_log(submitted)})')
        running.append((run, submitted))
    done = [(r, j) for r, j in running if j.done()]
    if not done:
      time.sleep(poll_s)
      continue
    for run, submitted in done:
      running.remove((run, submitted))
      try:
        submitted.result()
        say(f'{run.label}: done')
      except Exception as error:  # pylint: disable=broad-except  (a job's failure, reported)
        failures.append(f'{run.label} failed: {_last_line(error)} (log {_log(submitted)})')
        say(failures[-1])
  return failures


def _phase(name, runs, executor, jobs, job, say) -> None:
  todo = [r for r in runs if not is_complete(r.workdir)]
  say(f'{name}: {len(runs) - len(todo)} of {len(runs)} complete, {len(todo)} to run')
  failures = execute(todo, executor, jobs=jobs, job=job, say=say) if todo else []
  if failures:
    raise RowError(
      f'{len(failures)} {name} run(s) failed: {"; ".join(failures)}. '
      'Rerun the same command: complete runs are kept, the rest resume.'
    )


def run_row(
  row,
  root: str,
  *,
  executor: str = 'local',
  jobs: int = 1,
  job: Optional[Callable] = None,
  make: Callable = make_executor,
  say=print,
) -> dict:
  """Runs (or resumes) the whole row in `root`: searches, the selection, evaluations.
  Returns the selection (ROOT/selection.json)."""
  check_row(row)
  prepare_root(row, root)
  job = job or RunJob()
  ex = make(row, executor, os.path.join(root, 'logs', '%j'), jobs)
  _phase('search', search_runs(row, root), ex, jobs, job, say)
  selection = select(row, root)
  writers.write_json_atomic(os.path.join(root, SELECTION_FILE), selection)
  if selection['selection'] == 'best_by_search_val':
    say(f"best search by {selection['metric']}: seed {selection['best_search_seed']}")
  _phase('evaluation', eval_runs(row, root, selection), ex, jobs, job, say)
  return selection
