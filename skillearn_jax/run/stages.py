"""Runs made of stages: several experiments chained in one workdir, one command.

This module owns the chaining of a `skills.base.Stages` run (P-DARTS' progressive search):
stage i runs as any experiment in its own workdir `stage_<i>/` (its checkpoints, metrics,
artifacts and summary), with the config the stages give it from the summaries before it; then
the run's summary and artifacts go to the workdir. Re-running the command skips the complete
stages and resumes the one it stopped in; a stage cut short by `max_steps` ends the command
there, and the next command goes on with it.
"""

from __future__ import annotations

import json
import os

import jax

from skillearn_jax.run import resume_check
from skillearn_jax.run import writers
from skillearn_jax.skills import base


def _complete(stage_dir: str) -> dict | None:
  path = os.path.join(stage_dir, 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  return summary if summary.get('complete') else None


def run_stages(config, workdir: str, stages: base.Stages, run_one) -> dict:
  """Runs (or resumes) every stage with `run_one(stage config, stage workdir)` (the runner's
  single-run path); returns the run's summary."""
  os.makedirs(workdir, exist_ok=True)
  stage_dirs = [os.path.join(workdir, f'stage_{i + 1}') for i in range(stages.count)]
  resuming = any(os.path.isdir(os.path.join(d, 'checkpoints')) for d in stage_dirs)
  resume_check.check_same_run(config, workdir, resuming=resuming)
  recorded = os.path.join(workdir, 'summary.json')
  if os.path.exists(recorded) and all(_complete(d) for d in stage_dirs):
    print(f'already complete: all {stages.count} stages in {workdir}; nothing was changed')
    with open(recorded) as f:
      return json.load(f)
  primary = jax.process_index() == 0
  if primary:
    writers.write_json_atomic(os.path.join(workdir, 'config.json'), config.to_dict())
  summaries = []
  for i, stage_dir in enumerate(stage_dirs):
    stage_config = stages.config_for(i, summaries)
    summary = _complete(stage_dir)
    if summary is None:
      print(f'stage {i + 1}/{stages.count} ({stage_dir})', flush=True)
      summary = run_one(stage_config, stage_dir)
      if not summary.get('complete'):
        print(
          f'stage {i + 1}/{stages.count} stopped at step {summary["steps"]} (max_steps); '
          'run the command again to go on',
          flush=True,
        )
        return {'stages_complete': i, 'stopped_in_stage': i + 1, **summary}
    summaries.append(summary)
  summary = dict(stages.finish(summaries, workdir, primary))
  if primary:
    writers.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  return summary
