"""P-DARTS' progressive search (Chen et al., 2019) as a chain of stages, on any NAS skill.

This module owns how a P-DARTS run (`config.space = 'pdarts'`) splits into stages: stage i
searches a fresh supernet of `pdarts.layers[i]` cells over the ops still on (`stage_config`);
after it each edge keeps its `pdarts.keep[i]` strongest ops for the next stage (`nas.pdarts.prune`
on the stage's final α, read from its summary, so a stage's masks are a pure function of the
stage before); after the last stage the final cell allows at most `pdarts.max_skips`
skip-connects in the normal cell (`nas.pdarts.final_cell`), and the run's summary lists every
stage. `run.stages` chains them in one workdir and resumes wherever the run stopped.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from skillearn_jax.nas import cell_plot
from skillearn_jax.nas import genotypes
from skillearn_jax.nas import pdarts
from skillearn_jax.skills import base
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


def _weights(stage_config_, summary):
  space = nas_search.space_of(stage_config_)
  arch = nas_search.arch_arrays(summary['describe']['alphas'])
  return space, {k: np.asarray(w) for k, w in space.op_weights(arch).items()}


def stages(config) -> base.Stages | None:
  """The stages of a P-DARTS search, or None for any other config (or a stage's own)."""
  if config.get('space') != 'pdarts' or config.pdarts.stage:
    return None
  p = config.pdarts
  configs = []

  def config_for(index, earlier):
    masks = None
    if index:
      space, weights = _weights(configs[index - 1], earlier[index - 1])
      masks = {
        cell: pdarts.prune(
          weights[cell], space.mask(cell), int(p.keep[index - 1]), space.primitives
        )
        for cell in space.cell_types
      }
    del configs[index:]
    configs.append(stage_config(config, index, masks))
    return configs[index]

  def finish(summaries, workdir, write):
    space, weights = _weights(configs[-1], summaries[-1])
    normal, reduce = space.cell_types
    cells = {
      cell: pdarts.final_cell(
        weights[cell],
        space.mask(cell),
        nodes=space.nodes,
        primitives=space.primitives,
        max_skips=int(p.max_skips) if cell == normal else None,
      )
      for cell in space.cell_types
    }
    concat = space.concat()
    genotype = genotypes.Genotype(cells[normal], concat, cells[reduce], concat)
    summary = {
      'stages': [
        {
          'stage': i + 1,
          'layers': c.net.layers,
          'ops_per_edge': int(nas_search.space_of(c).mask(normal).sum(1).max()),
          'steps': s['steps'],
          'genotype': s['describe']['genotype'],
          'final_metrics': s['final_metrics'],
          **({'stopped': s['stopped']} if 'stopped' in s else {}),
        }
        for i, (c, s) in enumerate(zip(configs, summaries))
      ],
      'genotype': genotypes.genotype_to_dict(genotype),
      'final_metrics': summaries[-1]['final_metrics'],
    }
    if write:
      genotypes.save_genotype(genotype, os.path.join(workdir, 'genotype.json'))
      cell_plot.plot_genotype(genotype, os.path.join(workdir, 'plots'), prefix='cell_')
    print(f'P-DARTS final genotype: {genotype}', flush=True)
    return summary

  return base.Stages(count=len(p.layers), config_for=config_for, finish=finish)
