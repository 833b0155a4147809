"""P-DARTS' progressive search: stages chained in one workdir, one command.

This module owns a staged run (`config.space = 'pdarts'`): stage i trains a fresh supernet of
`pdarts.layers[i]` cells over the ops still on (its own workdir `stage_<i>/`, with its own
checkpoints, metrics, genotype and α plots), then each edge keeps its `pdarts.keep[i]`
strongest ops for the next stage (`nas.pdarts.prune`). After the last stage the final cell
allows at most `pdarts.max_skips` skip-connects in the normal cell (`nas.pdarts.final_cell`);
the workdir gets genotype.json, the cell diagrams and a summary of every stage. Re-running the
command skips finished stages and resumes the unfinished one: a stage's masks are a pure
function of the previous stage's final α (read from its summary.json).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from skillearn_jax.nas import cell_plot
from skillearn_jax.nas import genotypes
from skillearn_jax.nas import pdarts
from skillearn_jax.run import resume_check
from skillearn_jax.run import writers
from skillearn_jax.skills import nas_search


def stage_config(config, index: int, masks: dict | None) -> ml_collections.ConfigDict:
  """Stage `index` (0-based) of `config`: its cell count, dropout rate and ops still on."""
  c = ml_collections.ConfigDict(config.to_dict())
  p = c.pdarts
  c.net.layers = int(p.layers[index])
  p.stage = index + 1
  p.drop_rate = float(p.drop_rates[index])
  p.masks = json.dumps({k: np.asarray(v, bool).tolist() for k, v in masks.items()}) if masks else ''
  return c


def _finished(stage_dir: str, config) -> dict | None:
  path = os.path.join(stage_dir, 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  total = summary['steps'] / max(summary['epochs'], 1e-9) * config.num_epochs
  if 'stopped' in summary or summary['steps'] >= min(
    total, config.max_steps if config.max_steps > 0 else total
  ):
    return summary
  return None


def run_stages(config, workdir: str, run_one) -> dict:
  """Runs (or resumes) every stage of `config` with `run_one(stage config, stage workdir)`
  (the runner's single-run path); returns the summary."""
  p = config.pdarts
  os.makedirs(workdir, exist_ok=True)
  stage_dirs = [os.path.join(workdir, f'stage_{i + 1}') for i in range(len(p.layers))]
  resuming = any(os.path.isdir(os.path.join(d, 'checkpoints')) for d in stage_dirs)
  resume_check.check_same_run(config, workdir, resuming=resuming)
  primary = jax.process_index() == 0
  if primary:
    writers.write_json_atomic(os.path.join(workdir, 'config.json'), config.to_dict())
  masks, stages = None, []
  for i, stage_dir in enumerate(stage_dirs):
    c = stage_config(config, i, masks)
    summary = _finished(stage_dir, c)
    if summary is None:
      print(f'P-DARTS stage {i + 1}/{len(stage_dirs)}: {c.net.layers} cells', flush=True)
      summary = run_one(c, stage_dir)
    space = nas_search.space_of(c)
    arch = summary['describe']['alphas']
    weights = {k: np.asarray(w) for k, w in space.op_weights(nas_search.arch_arrays(arch)).items()}
    stages.append(
      {
        'stage': i + 1,
        'layers': c.net.layers,
        'ops_per_edge': int(space.mask('normal').sum(1).max()),
        'steps': summary['steps'],
        'genotype': summary['describe']['genotype'],
        'final_metrics': summary['final_metrics'],
        **({'stopped': summary['stopped']} if 'stopped' in summary else {}),
      }
    )
    if i + 1 < len(stage_dirs):
      masks = {
        cell: pdarts.prune(weights[cell], space.mask(cell), int(p.keep[i]), space.primitives)
        for cell in space.cell_types
      }
  cells = {
    cell: pdarts.final_cell(
      weights[cell],
      space.mask(cell),
      nodes=space.nodes,
      primitives=space.primitives,
      max_skips=int(p.max_skips) if cell == 'normal' else None,
    )
    for cell in space.cell_types
  }
  concat = range(
    genotypes.NUM_INPUT_STATES + space.nodes - space.multiplier,
    genotypes.NUM_INPUT_STATES + space.nodes,
  )
  genotype = genotypes.Genotype(cells['normal'], concat, cells['reduce'], concat)
  summary = {
    'stages': stages,
    'genotype': genotypes.genotype_to_dict(genotype),
    'final_metrics': stages[-1]['final_metrics'],
  }
  if primary:
    genotypes.save_genotype(genotype, os.path.join(workdir, 'genotype.json'))
    cell_plot.plot_genotype(genotype, os.path.join(workdir, 'plots'), prefix='cell_')
    writers.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  print(f'P-DARTS final genotype: {genotype}', flush=True)
  return summary


def staged(config) -> bool:
  """Whether `config` is a P-DARTS search still to be split into stages."""
  return config.get('space') == 'pdarts' and config.pdarts.stage == 0
