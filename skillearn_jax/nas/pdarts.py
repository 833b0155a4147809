"""P-DARTS' discretisation: which ops survive each stage, and the final cell (Chen et al., 2019).

This module owns the two rules the official P-DARTS code applies between and after its
stages, on numpy arrays of one cell type's op weights (edges x primitives; a stage's
`SearchSpace.op_weights`, zero where an op is off) and masks:
- `prune`: each edge drops its weakest ops until `keep` remain (in the official order: the
  minimum first, the lower index on ties; `none` counts like any op, except when one op is left,
  where `none` goes first: the last stage keeps each edge's strongest real op);
- `final_cell`: the last stage's cell, two inputs per node by their strongest remaining weight
  (`none` zeroed), with at most `max_skips` skip-connects: while there are more, the kept
  skip-connect of the smallest weight is zeroed and its edge falls back to its next op, and the
  node's two inputs are picked again (the official `delete_min_sk_prob`, `keep_1_on` and
  `keep_2_branches` loop). Edges are listed in edge order, as the official `parse_network`
  lists them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NONE, SKIP = 'none', 'skip_connect'
NUM_INPUT_STATES = 2


def prune(weights, mask, keep: int, primitives: Sequence[str]) -> np.ndarray:
  """The mask of the ops each edge keeps: its `keep` strongest among those on."""
  weights, mask = np.asarray(weights, np.float64), np.asarray(mask, bool)
  if weights.shape != mask.shape or weights.shape[1] != len(primitives):
    raise ValueError(
      f'prune: weights {weights.shape} and mask {mask.shape} must both be (edges, '
      f'{len(primitives)} primitives)'
    )
  none = list(primitives).index(NONE) if NONE in primitives else None
  out = mask.copy()
  for edge in range(len(mask)):
    on = [o for o in range(mask.shape[1]) if mask[edge, o]]
    if keep == 1 and none in on and len(on) > 1:
      on.remove(none)  # the last stage never keeps `none`
      out[edge, none] = False
    while len(on) > keep:
      weakest = min(on, key=lambda o: (weights[edge, o], o))
      on.remove(weakest)
      out[edge, weakest] = False
  return out


def _edges_by_node(nodes: int) -> list[list[int]]:
  groups, start = [], 0
  for i in range(nodes):
    groups.append(list(range(start, start + NUM_INPUT_STATES + i)))
    start += NUM_INPUT_STATES + i
  return groups


def _pick(probs, mask, nodes: int):
  """Each edge's best op still on (not `none`) and each node's two strongest edges."""
  ops = {
    e: max((o for o in np.flatnonzero(mask[e])), key=lambda o: (probs[e, o], -o))
    for e in range(len(mask))
  }
  kept = []
  for group in _edges_by_node(nodes):
    strength = {e: probs[e].max() for e in group}
    kept += sorted(sorted(group, key=lambda e: -strength[e])[:2])
  return ops, kept


def final_cell(weights, mask, *, nodes: int, primitives: Sequence[str], max_skips: int | None):
  """((op name, input state) per kept edge, in edge order) of the last stage's cell.

  `weights` and `mask` are the last stage's (before its final pruning to one op per edge);
  `max_skips` None puts no limit (the reduction cell)."""
  probs = np.asarray(weights, np.float64).copy()
  mask = np.asarray(mask, bool).copy()
  names = list(primitives)
  if NONE in names:  # the final cell never picks `none`
    probs[:, names.index(NONE)] = 0.0
    mask[:, names.index(NONE)] = False
  ops, kept = _pick(probs, mask, nodes)
  if max_skips is not None and SKIP in names:
    skip = names.index(SKIP)
    while sum(ops[e] == skip for e in kept) > max_skips:
      skips = [e for e in kept if ops[e] == skip]
      weakest = min(skips, key=lambda e: (probs[e, skip], e))
      probs[weakest, skip] = 0.0
      mask[weakest, skip] = False
      ops, kept = _pick(probs, mask, nodes)
  states = {e: s for group in _edges_by_node(nodes) for s, e in enumerate(group)}
  return tuple((names[ops[e]], states[e]) for e in kept)
