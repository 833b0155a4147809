"""The search space as a value: what a NAS skill searches over, in one place.

This module owns `SearchSpace`: the candidate operations of every edge (one primitive tuple
shared by all edges, narrowed per cell type and edge by boolean masks, so the supernet's edge
scan stays uniform and compiles the same whatever is pruned), the architecture parameters the
space needs (`init_arch`: α logits per cell type, and PC-DARTS' edge β), the values a variant
reads per step (DARTS-' auxiliary coefficient and P-DARTS' dropout: `init_variant` here,
`skills.nas_search.variant_values` in a run), the genotype derived from the parameters
(`genotype`), the supernet built from the space (`supernet`) and its weight count as the
official code counts it (`count_search_params`). Skills get their
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
  # The DARTS-family variants (see `search_network._EdgeStep`): PC-DARTS' partial channels
  # (K) and edge normalization (β per cell type and edge), DARTS-' auxiliary skip, P-DARTS'
  # dropout after skip-connects.
  partial_channels: int = 1
  edge_normalization: bool = False
  auxiliary_skip: bool = False
  skip_dropout: bool = False

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
    DARTS code draws them (masked-off entries are drawn too and never read); with edge
    normalization also β per cell type and edge, 1e-3 · N(0, 1) as PC-DARTS draws them."""
    arch = search_network.init_alphas(key, nodes=self.nodes, num_ops=len(self.primitives))
    if self.edge_normalization:
      keys = jax.random.split(jax.random.fold_in(key, 1), len(CELL_TYPES))
      arch[search_network.BETAS] = {
        c: 1e-3 * jax.random.normal(k, (self.num_edges,), jnp.float32)
        for c, k in zip(CELL_TYPES, keys)
      }
    return arch

  def init_variant(self) -> dict | None:
    """The supernet's `variant` values for `init` and shape-only passes (DARTS-' coefficient
    at its start; dropout only trains), or None when the space needs none."""
    return {'aux_scale': jnp.float32(1.0)} if self.auxiliary_skip else None

  def op_weights(self, arch) -> dict:
    """Per cell type, each edge's weights over its primitives (zero where off), times the
    edge's normalized β under edge normalization (what PC-DARTS' genotype ranks)."""
    weights = search_network.op_weights({c: arch[c] for c in CELL_TYPES}, self.masks)
    if self.edge_normalization:
      weights = {
        c: w * search_network.edge_weights(arch[search_network.BETAS][c], self.nodes)[:, None]
        for c, w in weights.items()
      }
    return weights

  def concat(self) -> range:
    """The states a cell concatenates into its output: its last `multiplier` nodes."""
    return range(
      genotypes.NUM_INPUT_STATES + self.nodes - self.multiplier,
      genotypes.NUM_INPUT_STATES + self.nodes,
    )

  def genotype(self, arch) -> genotypes.Genotype:
    """The DARTS genotype of `arch`: per node the two strongest incoming edges, each with its
    strongest op other than `none` among those still on."""
    weights = {c: np.asarray(w) for c, w in self.op_weights(_as_arrays(arch)).items()}
    concat = self.concat()
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
    precision: str = 'float32',
  ) -> search_network.SearchNetwork:
    """The weight-sharing supernet over this space, computing in `precision`."""
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
      partial_channels=self.partial_channels,
      edge_normalization=self.edge_normalization,
      auxiliary_skip=self.auxiliary_skip,
      skip_dropout=self.skip_dropout,
      precision=precision,
    )


def count_search_params(
  space: SearchSpace,
  *,
  channels: int = 16,
  layers: int = 8,
  num_classes: int = 10,
  image_shape=(32, 32, 3),
) -> int:
  """The supernet's weights (no architecture parameters), counting on each edge only the ops
  still on, as the official code of a pruned space (a P-DARTS stage) builds only those. From
  the parameter shapes (jax.eval_shape): nothing is compiled."""
  net = space.supernet(channels=channels, num_classes=num_classes, layers=layers, remat=False)
  arch = jax.eval_shape(space.init_arch, jax.random.key(0))
  x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  variant = space.init_variant()
  kwargs = {'variant': variant} if variant else {}
  shapes = jax.eval_shape(
    lambda k, x, a: net.init(k, x, a, train=False, **kwargs), jax.random.key(0), x, arch
  )
  params = shapes['params']
  total = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
  edges = search_network.cell_edges(space.nodes)
  groups = {
    'edges': list(range(len(edges))),
    'input_edges': [e for e, (src, _) in enumerate(edges) if src < genotypes.NUM_INPUT_STATES],
    'node_edges': [e for e, (src, _) in enumerate(edges) if src >= genotypes.NUM_INPUT_STATES],
  }
  reductions = net.reduction_layers()
  for i in range(layers):
    mask = space.mask(CELL_TYPES[1] if i in reductions else CELL_TYPES[0])
    for group, indices in groups.items():
      mixed = params[f'cell_{i}'].get(group, {}).get('mixed_op', {})
      for o, name in enumerate(space.primitives):
        if name not in mixed:
          continue
        per_edge = sum(int(np.prod(l.shape[1:])) for l in jax.tree_util.tree_leaves(mixed[name]))
        total -= per_edge * sum(not mask[e, o] for e in indices)
  return total


def of_network(net: search_network.SearchNetwork) -> SearchSpace:
  """The space a supernet was built from."""
  return SearchSpace(
    primitives=net.primitives,
    nodes=net.nodes,
    multiplier=net.multiplier,
    masks=net.edge_masks,
    partial_channels=net.partial_channels,
    edge_normalization=net.edge_normalization,
    auxiliary_skip=net.auxiliary_skip,
    skip_dropout=net.skip_dropout,
  )


def _as_arrays(arch) -> dict:
  return jax.tree_util.tree_map(jnp.asarray, dict(arch))


SPACES = ('darts', 'pdarts', 'pcdarts', 'darts_minus')


def darts(*, nodes: int = 4, multiplier: int = 4, primitives: Sequence[str] = ops.PRIMITIVES):
  """The DARTS space: every primitive on every edge."""
  return SearchSpace(primitives=tuple(primitives), nodes=nodes, multiplier=multiplier)


def pcdarts(*, k: int = 4, nodes: int = 4, multiplier: int = 4):
  """PC-DARTS (Xu et al., 2020): the DARTS space with partial channels (1/K of each edge's
  channels through the mixed op) and edge normalization."""
  if k < 1:
    raise ValueError(f'pcdarts: k must be >= 1, got {k}')
  return SearchSpace(
    nodes=nodes, multiplier=multiplier, partial_channels=k, edge_normalization=True
  )


def darts_minus(*, nodes: int = 4, multiplier: int = 4):
  """DARTS- (Chu et al., 2021): the DARTS space with an auxiliary skip on every edge, outside
  α, scaled by a coefficient that decays to 0 over the search."""
  return SearchSpace(nodes=nodes, multiplier=multiplier, auxiliary_skip=True)


def pdarts(*, nodes: int = 4, multiplier: int = 4, masks=None):
  """A P-DARTS (Chen et al., 2019) stage's space: the DARTS space with dropout after
  skip-connects, narrowed per edge to the ops still on (`masks`, None in the first stage)."""
  space = SearchSpace(nodes=nodes, multiplier=multiplier, skip_dropout=True)
  return space.with_masks(masks) if masks is not None else space
