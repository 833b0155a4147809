"""The search space as a value: what a NAS skill searches over, in one place.

This module owns `SearchSpace`: the candidate operations of every edge (one primitive tuple
shared by all edges, narrowed per cell type and edge by boolean masks, so the supernet's edge
scan stays uniform and compiles the same whatever is pruned), the architecture parameters the
space needs (`init_arch`: the α logits per cell type today; variants that need more, such as
PC-DARTS' edge β or DARTS-' auxiliary coefficient, add their entries here), the genotype
derived from them (`genotype`), and the supernet built from it (`supernet`). Skills get their
supernet and their genotype from a space; nothing else names the cell types or the primitives.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillearn_jax.nas import genotypes
from skillearn_jax.nas import ops
from skillearn_jax.nas import search_network

CELL_TYPES = genotypes.CELL_TYPES


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A DARTS-family cell search space.

  `primitives`: the candidate operations every edge computes; `nodes` intermediate nodes per
  cell, the last `multiplier` concatenated into its output; `masks`: None (every primitive on
  every edge), or ((cell type, ((bool per primitive) per edge)), ...) as built by
  `with_masks`. Frozen and hashable, so a supernet built from it can be a jit cache key.
  """

  primitives: tuple[str, ...] = ops.PRIMITIVES
  nodes: int = 4
  multiplier: int = 4
  masks: tuple | None = None

  def __post_init__(self):
    object.__setattr__(self, 'primitives', tuple(self.primitives))
    search_network.validate_primitives(self.primitives)
    if self.nodes < 1 or not 1 <= self.multiplier <= self.nodes:
      raise ValueError(
        f'SearchSpace: nodes must be >= 1 and multiplier in 1..nodes, got nodes={self.nodes}, '
        f'multiplier={self.multiplier}'
      )
    if self.masks is not None:
      for cell_type, mask in self.masks:
        shape = np.shape(mask)
        if cell_type not in CELL_TYPES or shape != (self.num_edges, len(self.primitives)):
          raise ValueError(
            f'SearchSpace.masks: {cell_type!r} mask of shape {shape}; expected a cell type in '
            f'{CELL_TYPES} and shape (edges, primitives) = '
            f'{(self.num_edges, len(self.primitives))}'
          )
        if not np.all(np.any(mask, axis=1)):
          raise ValueError(f'SearchSpace.masks: an edge of the {cell_type} cell has no op on')

  @property
  def cell_types(self) -> tuple[str, ...]:
    return CELL_TYPES

  @property
  def num_edges(self) -> int:
    return search_network.num_edges(self.nodes)

  def mask(self, cell_type: str) -> np.ndarray:
    """(edges, primitives) booleans: which primitives are on, per edge."""
    masks = dict(self.masks or ())
    if cell_type in masks:
      return np.asarray(masks[cell_type], bool)
    return np.ones((self.num_edges, len(self.primitives)), bool)

  def with_masks(self, masks: Mapping[str, Any]) -> 'SearchSpace':
    """This space with the primitives of `masks` (cell type -> (edges, primitives) booleans)
    left on and every other one off; cell types not named keep their masks."""
    merged = {c: self.mask(c) for c in CELL_TYPES}
    merged.update({c: np.asarray(m, bool) for c, m in masks.items()})
    frozen = tuple((c, tuple(tuple(bool(b) for b in row) for row in merged[c])) for c in CELL_TYPES)
    return dataclasses.replace(self, masks=frozen)

  def init_arch(self, key: jax.Array) -> dict:
    """Fresh architecture parameters: α logits per cell type, 1e-3 · N(0, 1), as the official
    DARTS code draws them (masked-off entries are drawn too and never read)."""
    return search_network.init_alphas(key, nodes=self.nodes, num_ops=len(self.primitives))

  def op_weights(self, arch) -> dict:
    """Per cell type, each edge's weights over its primitives (zero where off)."""
    return search_network.op_weights(dict(arch), self.masks)

  def genotype(self, arch) -> genotypes.Genotype:
    """The DARTS genotype of `arch`: per node the two strongest incoming edges, each with its
    strongest op other than `none` among those still on."""
    weights = {c: np.asarray(w) for c, w in self.op_weights(_as_arrays(arch)).items()}
    concat = range(
      genotypes.NUM_INPUT_STATES + self.nodes - self.multiplier,
      genotypes.NUM_INPUT_STATES + self.nodes,
    )
    cells = {
      c: genotypes.derive_cell(weights[c], self.primitives, self.nodes, mask=self.mask(c))
      for c in CELL_TYPES
    }
    return genotypes.Genotype(
      normal=cells[CELL_TYPES[0]],
      normal_concat=concat,
      reduce=cells[CELL_TYPES[1]],
      reduce_concat=concat,
    )

  def supernet(
    self,
    *,
    channels: int,
    num_classes: int,
    layers: int,
    stem_multiplier: int = 3,
    remat: bool = True,
    conv_impl: str = 'auto',
  ) -> search_network.SearchNetwork:
    """The weight-sharing supernet over this space."""
    return search_network.SearchNetwork(
      channels=channels,
      num_classes=num_classes,
      layers=layers,
      nodes=self.nodes,
      multiplier=self.multiplier,
      stem_multiplier=stem_multiplier,
      primitives=self.primitives,
      remat=remat,
      edge_masks=self.masks,
      conv_impl=conv_impl,
    )


def _as_arrays(arch) -> dict:
  return {k: jnp.asarray(v) for k, v in dict(arch).items()}


def darts(*, nodes: int = 4, multiplier: int = 4, primitives: Sequence[str] = ops.PRIMITIVES):
  """The DARTS space: every primitive on every edge."""
  return SearchSpace(primitives=tuple(primitives), nodes=nodes, multiplier=multiplier)
