"""The DARTS search supernet (Flax, NHWC), laid out for a fast XLA compile.

This module owns ``SearchNetwork`` (stem, search cells, global-pool classifier), its cells and
mixed ops, the architecture-parameter pytree (``init_alphas``: ``{'normal', 'reduce'}``, each
``(num_edges(nodes), len(primitives))``, passed to the network as an argument and softmaxed
over ops inside it) and the DARTS edge numbering (``num_edges``, ``cell_edges``: node i reads
every earlier state, edges node-major). The computation equals the official DARTS supernet;
what differs is its shape for the compiler: a cell's edges are not unrolled but scanned over a
stacked edge-parameter pytree, so each mixed op is traced once per cell (twice for a reduction
cell: its stride-2 input edges, then its stride-1 node-to-node edges), and once per pair of
cells of equal shapes (the scan is one jitted function per configuration, whose trace JAX
caches), which keeps the program small enough to compile a second-order DARTS step in seconds
rather than minutes.

``precision`` (``ops.PRECISIONS``) is the dtype of the activations and convolutions: at
'bfloat16' the image is cast on entry, kernels at use, and the mixing weights (the softmax of
float32 α), PC-DARTS' edge weights, batch-norm statistics and the logits stay float32.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from skillearn_jax.nas import conv, ops
from skillearn_jax.nas.genotypes import CELL_TYPES
from skillearn_jax.nas.search_mixed_op import MixedOp

NUM_INPUT_STATES = 2  # a cell reads the outputs of the two previous cells
BETAS = 'betas'  # PC-DARTS' edge-normalization parameters in the architecture dict


def num_edges(nodes: int) -> int:
  """Number of edges of a cell with ``nodes`` intermediate nodes (14 for 4 nodes)."""
  if nodes < 1:
    raise ValueError(f'nodes must be >= 1, got {nodes}')
  return sum(NUM_INPUT_STATES + i for i in range(nodes))


def cell_edges(nodes: int) -> list[tuple[int, int]]:
  """``(source_state, target_node)`` per edge in DARTS order; states 0, 1 are the cell
  inputs, state ``2 + i`` is intermediate node ``i``."""
  num_edges(nodes)
  return [(j, i) for i in range(nodes) for j in range(NUM_INPUT_STATES + i)]


def init_alphas(key: jax.Array, nodes: int = 4, num_ops: int = len(ops.PRIMITIVES)) -> dict:
  """Architecture parameters, one array per cell type (``CELL_TYPES``), each
  ``1e-3 * N(0, 1)`` of shape ``(num_edges(nodes), num_ops)``, as in the official code."""
  if num_ops < 1:
    raise ValueError(f'num_ops must be >= 1, got {num_ops}')
  keys = jax.random.split(key, len(CELL_TYPES))
  shape = (num_edges(nodes), num_ops)
  return {c: 1e-3 * jax.random.normal(k, shape, jnp.float32) for c, k in zip(CELL_TYPES, keys)}


def op_weights(alphas: dict, edge_masks: tuple | None = None) -> dict:
  """Each cell type's softmax over its edges' primitives; with ``edge_masks`` (see
  ``SearchNetwork.edge_masks``) the primitives that are off get exactly zero weight."""
  masks = dict(edge_masks or ())
  weights = {}
  for cell_type, logits in alphas.items():
    mask = masks.get(cell_type)
    if mask is not None and not np.all(mask):
      logits = jnp.where(np.asarray(mask, bool), logits, -jnp.inf)
    weights[cell_type] = jax.nn.softmax(logits, axis=-1)
  return weights


def edge_weights(betas, nodes: int):
  """PC-DARTS' edge normalization: softmax of β over each node's incoming edges (node i has
  2 + i, node-major as `cell_edges`), concatenated in edge order."""
  parts, start = [], 0
  for i in range(nodes):
    parts.append(jax.nn.softmax(betas[start : start + NUM_INPUT_STATES + i]))
    start += NUM_INPUT_STATES + i
  return jnp.concatenate(parts)


def validate_primitives(primitives: Sequence[str]) -> None:
  unknown = [p for p in primitives if p not in ops.PRIMITIVES]
  if not primitives or unknown or len(set(primitives)) != len(primitives):
    raise ValueError(
      f'primitives must be distinct names from {ops.PRIMITIVES}, got {tuple(primitives)}'
    )


# remat wraps the mixed op alone, so the edge scan saves its input slice per edge rather than
# the whole node buffer; `train` (argument 3, counting self) is static. It wraps it twice
# because a first derivative consumes one remat and leaves the forward pass plain: a second
# derivative (exact hypergradients) then saved ~19 intermediates per edge (batch 16 / 5 cells:
# 2,052 MB of residuals, 463 MB nested; batch 64 / 8 cells exact peak 15.0 -> 7.2 GB).
_remat_mixed_op = functools.partial(nn.remat, prevent_cse=False, static_argnums=(3,))
_RematMixedOp = _remat_mixed_op(_remat_mixed_op(MixedOp))


class _EdgeStep(nn.Module):
  """One edge of a cell's edge scan: the carry is the node-sum buffer; the edge reads its
  source from ``inputs`` (the cell inputs, when the input edges are strided and so differ in
  shape from the nodes) or else from the buffer itself.

  The variants' edges: with ``partial_channels`` K > 1 (PC-DARTS) the mixed op sees the first
  C/K channels and the rest bypass it (max-pooled 2x2 on stride-2 edges), concatenated back
  and shuffled in K groups; an edge ``scale`` (PC-DARTS' normalized edge weight) multiplies
  the edge's output; with ``auxiliary_skip`` (DARTS-) the edge adds ``variant['aux_scale']``
  times an identity (a FactorizedReduce on stride-2 edges) that α does not weigh."""

  channels: int
  stride: int
  primitives: Sequence[str]
  train: bool
  read_inputs: bool
  remat: bool
  conv_impl: str  # resolved ('cpu_fast' or 'xla'): part of _shared_scan's cache key
  partial_channels: int = 1
  auxiliary_skip: bool = False

  @nn.compact
  def __call__(self, buffer, edge, inputs, grad_gates, variant):
    source, target, weights, extras = edge
    variant = variant or {}
    x = lax.dynamic_index_in_dim(inputs if self.read_inputs else buffer, source, keepdims=False)
    k = self.partial_channels
    mixed_op = _RematMixedOp if self.remat else MixedOp
    skip_drop = (variant['skip_drop'], extras['key']) if 'skip_drop' in variant else None
    part = x[..., : self.channels // k] if k > 1 else x
    y = mixed_op(self.channels // k, self.stride, self.primitives, self.conv_impl, name='mixed_op')(
      part, weights, self.train, grad_gates, skip_drop
    )
    if k > 1:
      bypass = x[..., self.channels // k :]
      if self.stride == 2:
        bypass = max_pool_2x2(bypass)
      y = channel_shuffle(jnp.concatenate([y, bypass], axis=-1), k)
    if 'scale' in extras:  # float32 edge weight: its gradient is reduced in float32
      y = (extras['scale'] * y).astype(x.dtype)
    if self.auxiliary_skip:
      aux = x
      if self.stride == 2:
        aux = ops.FactorizedReduce(self.channels, False, self.conv_impl, name='auxiliary_skip')(
          x, train=self.train
        )
      y = (y + variant['aux_scale'] * aux).astype(x.dtype)
    updated = lax.dynamic_index_in_dim(buffer, target, keepdims=False) + y
    return lax.dynamic_update_index_in_dim(buffer, updated, target, 0), None


def max_pool_2x2(x):
  """2x2 max pooling, stride 2 (torch's MaxPool2d(2, 2)): the bypass of PC-DARTS' stride-2
  edges."""
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(
      f'partial channels: a stride-2 edge pools its bypass 2x2, which needs an even image '
      f'side; got {x.shape[1]}x{x.shape[2]}'
    )
  # A NumPy init value stays a constant under tracing (a jnp one is traced), so lax picks its
  # differentiable max-pool primitive rather than the generic reduction.
  init = np.array(-np.inf, x.dtype)
  return lax.reduce_window(x, init, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')


def channel_shuffle(x, groups: int):
  """NHWC channel shuffle: channel g * (C / groups) + i moves to i * groups + g, as the
  official PC-DARTS `channel_shuffle` does in NCHW."""
  *lead, c = x.shape
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


def _edge_scan(
  cell: nn.Module,
  buffer,
  edges,
  inputs,
  name: str,
  remat: bool = False,
  grad_gates=None,
  variant=None,
  **step_fields,
):
  """Run ``_EdgeStep`` over ``edges`` = (sources, targets, weights), one stacked set of
  variables per edge (``cell``'s subtree ``name``); with ``remat`` the backward pass
  recomputes each edge's mixed op from its input instead of keeping its intermediates.

  ``nn.scan`` creates the variables; once they exist, the scan runs as ``_shared_scan``,
  one jitted function per edge-step configuration, so cells of equal shapes (the 8-cell
  supernet's pairs 0/1, 3/4, 6/7) share one trace and JAX transforms it once per derivative
  instead of once per cell."""
  fields = dict(read_inputs=inputs is not None, remat=remat, **step_fields)
  inputs = jnp.zeros(()) if inputs is None else inputs
  if cell.is_initializing():
    scanned = nn.scan(
      _EdgeStep,
      variable_axes={'params': 0, 'batch_stats': 0},
      split_rngs={'params': True},
      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
      length=len(edges[0]),
    )
    buffer, _ = scanned(name=name, **fields)(buffer, edges, inputs, grad_gates, variant)
    return buffer
  variables = {
    col: cell.variables[col][name]
    for col in ('params', 'batch_stats')
    if name in cell.variables.get(col, {})
  }
  update_stats = fields['train'] and cell.is_mutable_collection('batch_stats')
  buffer, stats = _shared_scan(update_stats=update_stats, **fields)(
    variables, buffer, edges, inputs, grad_gates, variant
  )
  if update_stats:
    cell.put_variable('batch_stats', name, stats)
  return buffer


@functools.lru_cache(maxsize=None)
def _shared_scan(update_stats: bool, **fields):
  """``lax.scan`` of one ``_EdgeStep`` configuration over stacked per-edge variables, as
  ``nn.scan`` runs it once the variables exist, under ``jax.jit``: its trace is cached per
  input shapes, and the derivatives of a cached trace are cached too."""
  step = _EdgeStep(**fields)
  mutable = ['batch_stats'] if update_stats else False

  def run(variables, buffer, edges, inputs, grad_gates, variant):
    def body(buffer, edge_and_variables):
      edge, edge_variables = edge_and_variables
      out = step.apply(edge_variables, buffer, edge, inputs, grad_gates, variant, mutable=mutable)
      (buffer, _), updates = out if update_stats else (out, {})
      return buffer, updates.get('batch_stats')

    return lax.scan(body, buffer, (edges, variables))

  return jax.jit(run)


def _edge_arrays(edges, weights, extras, source_offset: int, target_offset: int):
  sources = jnp.asarray([s - source_offset for s, _ in edges], jnp.int32)
  targets = jnp.asarray([t + target_offset for _, t in edges], jnp.int32)
  return sources, targets, weights, extras


def unstack_cell_edges(cell_variables: dict, nodes: int) -> dict:
  """One cell's variables (one collection, e.g. ``params['cell_0']``) with the edge-stacked
  subtrees replaced by one ``edge_<e>`` subtree per edge (DARTS edge order), e.g. to run a
  plain per-edge formulation or to inspect one edge."""
  edges = cell_edges(nodes)
  groups = {
    'edges': list(range(len(edges))),
    'input_edges': [e for e, (s, _) in enumerate(edges) if s < NUM_INPUT_STATES],
    'node_edges': [e for e, (s, _) in enumerate(edges) if s >= NUM_INPUT_STATES],
  }
  out = {k: v for k, v in cell_variables.items() if k not in groups}
  for group, indices in groups.items():
    if group in cell_variables:
      stacked = cell_variables[group]['mixed_op']
      for i, e in enumerate(indices):
        out[f'edge_{e}'] = jax.tree.map(lambda a, i=i: a[i], stacked)
  return out


class SearchCell(nn.Module):
  """A DARTS search cell: preprocess both inputs, ``nodes`` nodes each summing mixed ops over
  all earlier states, output the concatenation of the last ``multiplier`` nodes."""

  channels: int
  reduction: bool
  reduction_prev: bool
  nodes: int = 4
  multiplier: int = 4
  primitives: Sequence[str] = ops.PRIMITIVES
  remat: bool = False
  conv_impl: str = 'auto'
  partial_channels: int = 1
  auxiliary_skip: bool = False

  @nn.compact
  def __call__(self, s0, s1, weights, *, train: bool, grad_gates=None, extras=None, variant=None):
    # extras: per-edge arrays (leading axis: the cell's edges), e.g. PC-DARTS' edge scales
    # and P-DARTS' dropout keys; variant: scalars every edge reads (see _EdgeStep).
    extras = extras or {}
    c, impl = self.channels, conv.resolve(self.conv_impl)
    if self.reduction_prev:
      s0 = ops.FactorizedReduce(c, False, impl, name='preprocess0')(s0, train=train)
    else:
      s0 = ops.ReLUConvBN(c, affine=False, conv_impl=impl, name='preprocess0')(s0, train=train)
    s1 = ops.ReLUConvBN(c, affine=False, conv_impl=impl, name='preprocess1')(s1, train=train)
    edges = cell_edges(self.nodes)
    step_kw = dict(
      channels=c,
      primitives=tuple(self.primitives),
      train=train,
      remat=self.remat,
      conv_impl=impl,
      grad_gates=grad_gates,
      variant=variant,
      **(
        dict(partial_channels=self.partial_channels, auxiliary_skip=self.auxiliary_skip)
        if self.partial_channels > 1 or self.auxiliary_skip
        else {}
      ),
    )
    pick = lambda keep: jax.tree_util.tree_map(lambda a: a[keep], extras)
    if not self.reduction:
      states = jnp.concatenate([jnp.stack([s0, s1]), jnp.zeros((self.nodes,) + s1.shape, s1.dtype)])
      states = _edge_scan(
        self,
        states,
        _edge_arrays(edges, weights, extras, 0, NUM_INPUT_STATES),
        None,
        'edges',
        stride=1,
        **step_kw,
      )
      nodes = states[NUM_INPUT_STATES:]
    else:
      is_input = np.array([s < NUM_INPUT_STATES for s, _ in edges])
      input_edges = [e for e, keep in zip(edges, is_input) if keep]
      node_edges = [e for e, keep in zip(edges, is_input) if not keep]
      n, h, w, _ = s1.shape
      nodes = jnp.zeros((self.nodes, n, (h + 1) // 2, (w + 1) // 2, c), s1.dtype)
      nodes = _edge_scan(
        self,
        nodes,
        _edge_arrays(input_edges, weights[is_input], pick(is_input), 0, 0),
        jnp.stack([s0, s1]),
        'input_edges',
        stride=2,
        **step_kw,
      )
      if node_edges:
        nodes = _edge_scan(
          self,
          nodes,
          _edge_arrays(node_edges, weights[~is_input], pick(~is_input), NUM_INPUT_STATES, 0),
          None,
          'node_edges',
          stride=1,
          **step_kw,
        )
    return jnp.concatenate(list(nodes[self.nodes - self.multiplier :]), axis=-1)


class SearchNetwork(nn.Module):
  """The DARTS supernet: stem conv 3x3 + affine BN, ``layers`` search cells (reduction cells
  at ``layers // 3`` and ``2 * layers // 3`` double the channels), global average pool,
  linear classifier. Call as ``net.apply(variables, x, alphas, train=..., mutable=...)`` with
  ``x`` NHWC and ``alphas`` from ``init_alphas``; variables are ``params`` and
  ``batch_stats``. ``grad_gates`` (traced booleans ``{'weights', 'alphas'}``, default None:
  both) lets a caller skip, at run time, the mixed ops' kernel gradients or the alphas'
  gradient it will discard (``search_mixed_op.gated``)."""

  channels: int = 16
  num_classes: int = 10
  layers: int = 8
  nodes: int = 4
  multiplier: int = 4
  stem_multiplier: int = 3
  primitives: Sequence[str] = ops.PRIMITIVES
  remat: bool = False  # recompute mixed ops in the backward pass: far less memory
  # Which primitives are on, per cell type and edge: ((cell type, ((bool per primitive) per
  # edge)), ...), or None for every primitive on every edge. An off primitive gets exactly
  # zero weight (its logit is masked to -inf before the softmax) while every edge still
  # computes the same primitives, so the edge scan stays uniform and compiles the same.
  edge_masks: tuple | None = None
  # conv.CONV_IMPLS; 'auto' is resolved when the network is built, so the module (and any jit
  # keyed on it) carries the implementation that runs
  conv_impl: str = 'auto'
  # The DARTS-family variants (see _EdgeStep): PC-DARTS' partial channels K and edge
  # normalization (arch['betas']), DARTS-' auxiliary skip (variant['aux_scale']) and
  # P-DARTS' dropout after skip-connects (variant['skip_drop'], variant['key']).
  partial_channels: int = 1
  edge_normalization: bool = False
  auxiliary_skip: bool = False
  skip_dropout: bool = False
  precision: str = 'float32'  # ops.PRECISIONS: the activations' and convolutions' dtype

  def __post_init__(self):
    object.__setattr__(self, 'conv_impl', conv.resolve(self.conv_impl))
    super().__post_init__()

  def _validate(self, alphas) -> None:
    for field in ('channels', 'num_classes', 'layers', 'nodes', 'multiplier', 'stem_multiplier'):
      if getattr(self, field) < 1:
        raise ValueError(f'{field} must be >= 1, got {getattr(self, field)}')
    if self.multiplier > self.nodes:
      raise ValueError(f'multiplier must be <= nodes ({self.nodes}), got {self.multiplier}')
    validate_primitives(self.primitives)
    if self.precision not in ops.PRECISIONS:
      raise ValueError(f'precision must be one of {ops.PRECISIONS}, got {self.precision!r}')
    if self.partial_channels < 1 or self.channels % self.partial_channels:
      raise ValueError(
        f'partial_channels must divide channels ({self.channels}), got {self.partial_channels}'
      )
    expected = (num_edges(self.nodes), len(self.primitives))
    keys = set(CELL_TYPES) | ({BETAS} if self.edge_normalization else set())
    if not isinstance(alphas, dict) or set(alphas) != keys:
      raise ValueError(
        f'alphas must be a dict with keys {sorted(keys)}, got '
        f'{type(alphas).__name__} {sorted(alphas) if isinstance(alphas, dict) else ""}'
      )
    for key in CELL_TYPES:
      value = alphas[key]
      if tuple(value.shape) != expected:
        raise ValueError(
          f"alphas['{key}'] must have shape {expected} "
          f'(edges, primitives), got {tuple(value.shape)}'
        )

  def reduction_layers(self) -> tuple[int, ...]:
    return tuple(sorted({self.layers // 3, 2 * self.layers // 3}))

  @nn.compact
  def __call__(self, x, alphas, *, train: bool, grad_gates=None, variant=None):
    self._validate(alphas)
    weights = op_weights({c: alphas[c] for c in CELL_TYPES}, self.edge_masks)
    extras = {c: {} for c in CELL_TYPES}
    if self.edge_normalization:
      for c in CELL_TYPES:
        extras[c]['scale'] = edge_weights(alphas[BETAS][c], self.nodes)
    # DARTS-' coefficient is read in both modes; P-DARTS' dropout only trains.
    needed = [k for k, on in (('aux_scale', self.auxiliary_skip),) if on]
    dropping = self.skip_dropout and train
    needed += ['skip_drop', 'key'] if dropping else []
    variant = dict(variant or {})
    missing = [k for k in needed if variant.get(k) is None]
    if missing:
      raise ValueError(f'this supernet needs the variant values {missing}')
    cell_variant = {k: variant[k] for k in needed if k != 'key'} or None
    if self.precision != 'float32':
      x = x.astype(self.precision)
    s = ops.conv(
      self.stem_multiplier * self.channels,
      3,
      padding=1,
      name='stem_conv',
      conv_impl=self.conv_impl,
    )(x)
    s0 = s1 = ops.batch_norm(True, train, name='stem_bn', dtype=ops.low_precision(s))(s)
    c, reduction_prev = self.channels, False
    for i in range(self.layers):
      reduction = i in self.reduction_layers()
      if reduction:
        c *= 2
      cell = SearchCell(
        c,
        reduction,
        reduction_prev,
        self.nodes,
        self.multiplier,
        tuple(self.primitives),
        self.remat,
        self.conv_impl,
        self.partial_channels,
        self.auxiliary_skip,
        name=f'cell_{i}',
      )
      cell_type = CELL_TYPES[1] if reduction else CELL_TYPES[0]
      cell_extras = dict(extras[cell_type])
      if dropping:
        cell_extras['key'] = jax.random.split(
          jax.random.fold_in(variant['key'], i), num_edges(self.nodes)
        )
      s0, s1 = (
        s1,
        cell(
          s0,
          s1,
          weights[cell_type],
          train=train,
          grad_gates=grad_gates,
          extras=cell_extras,
          variant=cell_variant,
        ),
      )
      reduction_prev = reduction
    # pooled in float32, so the classifier and the logits (and so the loss) are float32
    features = jnp.mean(s1.astype(jnp.float32) if ops.low_precision(s1) else s1, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=ops.TORCH_DEFAULT_INIT, name='classifier')(
      features
    )
