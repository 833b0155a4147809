"""The DARTS-family variants against the official code: counts, the partial-channel edge, the
shuffle, P-DARTS' pruning and final cell, DARTS-' and P-DARTS' per-step values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.nas import ops
from skillearn_jax.nas import pdarts
from skillearn_jax.nas import search_mixed_op
from skillearn_jax.nas import search_network
from skillearn_jax.nas import space as space_lib

P = ops.PRIMITIVES


# -- parameter counts -------------------------------------------------------------
def official_search_params(
  *, channels=16, layers=8, num_classes=10, k=1, aux=False, ops_on=P, nodes=4
) -> int:
  """The weights of an official model_search.py (DARTS, PC-DARTS' k, DARTS-' auxiliary
  FactorizedReduce on stride-2 edges, P-DARTS' ops kept per edge), written from its modules:
  every search BN is affine-free but the stem's; a sep conv is two (depthwise k x k, 1x1) pairs,
  a dil conv one; skip is a FactorizedReduce (two 1x1 convs to C/2) on stride-2 edges."""

  def mixed(c, stride2):
    sizes = {
      'sep_conv_3x3': 2 * (9 * c + c * c),
      'sep_conv_5x5': 2 * (25 * c + c * c),
      'dil_conv_3x3': 9 * c + c * c,
      'dil_conv_5x5': 25 * c + c * c,
      'skip_connect': c * c if stride2 else 0,
    }
    return sum(sizes.get(o, 0) for o in ops_on)

  c_stem = 3 * channels
  total = 3 * c_stem * 9 + 2 * c_stem  # stem conv + affine BN
  c_pp, c_p, c = c_stem, c_stem, channels
  for i in range(layers):
    reduction = i in (layers // 3, 2 * layers // 3)
    if reduction:
      c *= 2
    total += c_pp * c + c_p * c  # preprocess0 (ReLUConvBN or FactorizedReduce), preprocess1
    for node in range(nodes):
      for j in range(2 + node):
        stride2 = reduction and j < 2
        total += mixed(c // k, stride2)
        if aux and stride2:
          total += c * c
    c_pp, c_p = c_p, 4 * c
  return total + c_p * num_classes + num_classes


def test_the_official_counter_reproduces_the_pinned_darts_count():
  assert official_search_params() == 1_930_618  # tests/nas/test_search_network.py


@pytest.mark.parametrize(
  'space,expected',
  [
    (space_lib.darts(), official_search_params()),
    (space_lib.pcdarts(k=4), official_search_params(k=4)),  # 299,578
    (space_lib.darts_minus(), official_search_params(aux=True)),  # 1,971,578
    (space_lib.pdarts(), official_search_params()),
  ],
)
def test_search_counts_equal_the_official_model_search(space, expected):
  assert space_lib.count_search_params(space, channels=16, layers=8) == expected


@pytest.mark.parametrize(
  'layers,ops_on',
  [
    (5, P),  # stage 1: 1,275,834 (+ 224 α the official log counts as parameters)
    (11, ('none', 'max_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'dil_conv_3x3')),
    (17, ('skip_connect', 'sep_conv_3x3', 'sep_conv_5x5')),
  ],
)
def test_pdarts_stage_counts_equal_the_official_stage_network(layers, ops_on):
  space = space_lib.pdarts()
  on = np.array([p in ops_on for p in P])
  space = space.with_masks({c: np.tile(on, (space.num_edges, 1)) for c in space.cell_types})
  assert space_lib.count_search_params(space, layers=layers) == official_search_params(
    layers=layers, ops_on=ops_on
  )


# -- PC-DARTS -----------------------------------------------------------------------
def test_channel_shuffle_is_the_official_permutation():
  b, c, h, w, groups = 2, 12, 3, 3, 4
  nchw = np.arange(b * c * h * w, dtype=np.float32).reshape(b, c, h, w)
  # The official channel_shuffle: view(B, groups, C / groups, H, W), transpose(1, 2), view.
  official = nchw.reshape(b, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(b, c, h, w)
  ours = search_network.channel_shuffle(jnp.asarray(nchw.transpose(0, 2, 3, 1)), groups)
  np.testing.assert_array_equal(np.asarray(ours).transpose(0, 3, 1, 2), official)


@pytest.mark.parametrize('stride', [1, 2])
def test_the_partial_channel_edge_equals_its_written_out_version(stride):
  c, k = 8, 4
  step = search_network._EdgeStep(
    channels=c,
    stride=stride,
    primitives=P,
    train=False,
    read_inputs=True,
    remat=False,
    conv_impl='cpu_fast',
    partial_channels=k,
  )
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 2, 8, 8, c)), jnp.float32)  # the cell's 2 inputs, N = 2
  out_side = 8 // stride
  buffer = jnp.zeros((2, 2, out_side, out_side, c), jnp.float32)
  weights = jax.nn.softmax(jnp.asarray(rng.normal(size=len(P)), jnp.float32))
  edge = (jnp.int32(1), jnp.int32(0), weights, {'scale': jnp.float32(0.3)})
  variables = step.init(jax.random.key(0), buffer, edge, x, None, None)
  out, _ = step.apply(variables, buffer, edge, x, None, None)
  # Written out: the mixed op on the first C/K channels, the rest bypassed (max-pooled 2x2 on
  # stride-2 edges), concatenated, shuffled in K groups, times the edge weight.
  source = x[1]
  mixed = search_mixed_op.MixedOp(c // k, stride, P, 'cpu_fast')
  part = mixed.apply(
    {n: v['mixed_op'] for n, v in variables.items()}, source[..., : c // k], weights, False
  )
  bypass = source[..., c // k :]
  if stride == 2:
    bypass = bypass.reshape(2, 4, 2, 4, 2, c - c // k).max(axis=(2, 4))
  concat = np.concatenate([np.asarray(part), np.asarray(bypass)], axis=-1)
  groups = concat.reshape(2, out_side, out_side, k, c // k).swapaxes(-1, -2).reshape(concat.shape)
  np.testing.assert_allclose(np.asarray(out[0]), 0.3 * groups, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out[1]), 0.0)


def test_edge_normalization_is_a_softmax_over_each_nodes_inputs():
  betas = jnp.arange(14, dtype=jnp.float32) / 10
  w = np.asarray(search_network.edge_weights(betas, 4))
  for start, end in ((0, 2), (2, 5), (5, 9), (9, 14)):
    np.testing.assert_allclose(w[start:end], jax.nn.softmax(betas[start:end]), rtol=1e-6)


def test_pcdarts_genotype_ranks_edges_by_alpha_weight_times_edge_weight():
  space = space_lib.pcdarts(nodes=2, multiplier=2)
  arch = {c: np.zeros((5, 8), np.float32) for c in space.cell_types}
  arch['normal'][:, P.index('sep_conv_3x3')] = 1.0
  arch['normal'][2, P.index('sep_conv_3x3')] = 3.0  # node 1's strongest op, from state 0 ...
  betas = np.zeros(5, np.float32)
  betas[2] = -6.0  # ... on an edge its β nearly switches off
  arch['betas'] = {'normal': betas, 'reduce': np.zeros(5, np.float32)}
  normal, _ = space.genotype(arch).cell('normal')
  assert [state for _, state in normal[2:]] == [1, 2]  # edge 2 (state 0) is not kept
  arch['betas']['normal'][2] = 0.0
  assert 0 in [state for _, state in space.genotype(arch).cell('normal')[0][2:]]


# -- P-DARTS ------------------------------------------------------------------------
def test_prune_drops_the_weakest_and_the_last_stage_never_keeps_none():
  names = ('none', 'max_pool_3x3', 'skip_connect', 'sep_conv_3x3')
  weights = np.array([[0.4, 0.1, 0.3, 0.2], [0.1, 0.2, 0.2, 0.5]])
  mask = np.ones_like(weights, bool)
  kept = pdarts.prune(weights, mask, 2, names)
  # Edge 0: none (0.4) and skip (0.3) stay; edge 1: a tie at 0.2 drops the lower index.
  np.testing.assert_array_equal(kept, [[1, 0, 1, 0], [0, 0, 1, 1]])
  last = pdarts.prune(weights, kept, 1, names)
  np.testing.assert_array_equal(last, [[0, 0, 1, 0], [0, 0, 0, 1]])  # none goes first


def test_final_cell_allows_at_most_max_skips_and_repicks_as_the_official_code():
  names = ('none', 'skip_connect', 'sep_conv_3x3', 'dil_conv_3x3')
  # 2 nodes: node 0 edges 0-1 (states 0, 1), node 1 edges 2-4 (states 0, 1, 2).
  weights = np.array(
    [
      [0.1, 0.6, 0.3, 0.0],  # skip 0.6
      [0.1, 0.5, 0.0, 0.4],  # skip 0.5, then dil 0.4
      [0.0, 0.7, 0.2, 0.1],  # skip 0.7
      [0.2, 0.0, 0.3, 0.5],  # dil 0.5
      [0.0, 0.45, 0.35, 0.2],  # skip 0.45, then sep 0.35
    ]
  )
  mask = weights > -1
  mask[3, 1] = mask[0, 3] = mask[1, 2] = mask[2, 0] = mask[4, 0] = False
  # No limit: node 0 keeps edges 0, 1 (skip, skip), node 1 edges 2 (skip 0.7) and 3 (0.5).
  assert pdarts.final_cell(weights, mask, nodes=2, primitives=names, max_skips=None) == (
    ('skip_connect', 0),
    ('skip_connect', 1),
    ('skip_connect', 0),
    ('dil_conv_3x3', 1),
  )
  # At most 2: the weakest kept skip (edge 1, 0.5) falls back to dil (0.4); 2 skips remain.
  assert pdarts.final_cell(weights, mask, nodes=2, primitives=names, max_skips=2) == (
    ('skip_connect', 0),
    ('dil_conv_3x3', 1),
    ('skip_connect', 0),
    ('dil_conv_3x3', 1),
  )
  # At most 1: then edge 0 (0.6) falls back to sep (0.3); node 1 still keeps skip 0.7.
  assert pdarts.final_cell(weights, mask, nodes=2, primitives=names, max_skips=1) == (
    ('sep_conv_3x3', 0),
    ('dil_conv_3x3', 1),
    ('skip_connect', 0),
    ('dil_conv_3x3', 1),
  )
  # At most 0: node 1's skip edge (2) weakens to sep 0.2, so edges 3 (0.5) and 4 re-pick:
  # edge 4's skip (0.45) was never kept before; now it is and is zeroed too (sep 0.35).
  assert pdarts.final_cell(weights, mask, nodes=2, primitives=names, max_skips=0) == (
    ('sep_conv_3x3', 0),
    ('dil_conv_3x3', 1),
    ('dil_conv_3x3', 1),
    ('sep_conv_3x3', 2),
  )


def test_pdarts_skip_dropout_only_touches_the_identity_skip_and_scales_it():
  x = jnp.ones((2, 4, 4, 4), jnp.float32)
  w = jnp.zeros(len(P)).at[P.index('skip_connect')].set(1.0)
  op = search_mixed_op.MixedOp(4, 1, P, 'cpu_fast')
  variables = op.init(jax.random.key(0), x, w, True)
  plain = op.apply(variables, x, w, True, None, None, mutable=['batch_stats'])[0]
  dropped = op.apply(
    variables, x, w, True, None, (0.5, jax.random.key(3)), mutable=['batch_stats']
  )[0]
  np.testing.assert_array_equal(np.asarray(plain), 1.0)
  values = set(np.unique(np.asarray(dropped)).tolist())
  assert values == {0.0, 2.0}  # inverted dropout at rate 0.5
  evaluated = op.apply(variables, x, w, False, None, (0.5, jax.random.key(3)))
  np.testing.assert_array_equal(np.asarray(evaluated), 1.0)  # no dropout in eval mode
