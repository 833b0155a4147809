"""Tests for skillearn_jax.nas.search_network (and its fused mixed op): edge numbering, alpha
initialisation, parameter counts pinned to the PyTorch reference, output shapes, float32
parameters under JAX_ENABLE_X64, and the optimised network (scanned edges, fused mixed op)
against a plain per-edge, per-primitive formulation built from ops.make_op on the same
variables, whose convolutions are lax.conv_general_dilated with JAX's own derivatives
(conv_impl 'xla': an independent truth for conv.conv2d, and a far smaller program to
compile)."""

from typing import Sequence
from unittest import mock

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.nas import ops, search_network
from skillearn_jax.nas.search_network import (
  SearchNetwork,
  cell_edges,
  init_alphas,
  num_edges,
  unstack_cell_edges,
)

TINY = dict(channels=4, layers=3, nodes=2, multiplier=2)  # cells: normal, reduce, reduce


# the plain formulation's convolutions: plain lax, JAX's own derivatives
PLAIN_CONV = 'xla'


class PlainMixedOp(nn.Module):
  """Reference mixed op: every primitive from ops.make_op, pooling + affine-free BN."""

  channels: int
  stride: int
  primitives: Sequence[str]

  @nn.compact
  def __call__(self, x, weights, *, train):
    out = 0.0
    for weight, name in zip(weights, self.primitives):
      y = ops.make_op(name, self.channels, self.stride, False, name, PLAIN_CONV)(x, train=train)
      if name.endswith('pool_3x3'):
        y = ops.batch_norm(False, train, name=f'{name}_bn')(y)
      out = out + weight * y
    return out


class PlainSearchNetwork(nn.Module):
  """Reference supernet written as the official code loops: cell by cell, edge by edge."""

  channels: int
  layers: int
  nodes: int
  multiplier: int
  primitives: Sequence[str] = ops.PRIMITIVES

  @nn.compact
  def __call__(self, x, alphas, *, train):
    s0 = s1 = ops.batch_norm(True, train, name='stem_bn')(
      ops.conv(3 * self.channels, 3, padding=1, name='stem_conv', conv_impl=PLAIN_CONV)(x)
    )
    c, reduction_prev = self.channels, False
    for i in range(self.layers):
      reduction = i in (self.layers // 3, 2 * self.layers // 3)
      c = 2 * c if reduction else c
      weights = jax.nn.softmax(alphas['reduce' if reduction else 'normal'], -1)
      pre0 = (
        ops.FactorizedReduce(c, False, PLAIN_CONV, name=f'cell_{i}_preprocess0')
        if reduction_prev
        else ops.ReLUConvBN(c, affine=False, conv_impl=PLAIN_CONV, name=f'cell_{i}_preprocess0')
      )
      states = [
        pre0(s0, train=train),
        ops.ReLUConvBN(c, affine=False, conv_impl=PLAIN_CONV, name=f'cell_{i}_preprocess1')(
          s1, train=train
        ),
      ]
      edges = cell_edges(self.nodes)
      for node in range(self.nodes):
        states.append(
          sum(
            PlainMixedOp(
              c, 2 if reduction and src < 2 else 1, self.primitives, name=f'cell_{i}_edge_{e}'
            )(states[src], weights[e], train=train)
            for e, (src, tgt) in enumerate(edges)
            if tgt == node
          )
        )
      s0, s1 = s1, jnp.concatenate(states[-self.multiplier :], axis=-1)
      reduction_prev = reduction
    return nn.Dense(10, name='classifier')(jnp.mean(s1, axis=(1, 2)))


def to_plain_layout(collection: dict, nodes: int) -> dict:
  """Scanned network variables -> PlainSearchNetwork's flat naming."""
  out = {}
  for name, sub in collection.items():
    if name.startswith('cell_'):
      for child, value in unstack_cell_edges(sub, nodes).items():
        out[f'{name}_{child}'] = value
    else:
      out[name] = sub
  return out


def test_edge_numbering_matches_darts():
  assert num_edges(4) == 14 and num_edges(2) == 5
  edges = cell_edges(4)
  assert [e for e, (src, tgt) in enumerate(edges) if src == 0] == [0, 2, 5, 9]
  assert edges[13] == (4, 3)  # node 3 reads states 0..4
  with pytest.raises(ValueError, match='nodes'):
    num_edges(0)


def test_init_alphas_shapes_and_scale():
  alphas = init_alphas(jax.random.key(0), nodes=4, num_ops=8)
  chex.assert_shape([alphas['normal'], alphas['reduce']], (14, 8))
  assert not np.allclose(alphas['normal'], alphas['reduce'])
  assert 3e-4 < float(jnp.std(alphas['normal'])) < 3e-3
  chex.assert_shape(init_alphas(jax.random.key(0), nodes=2, num_ops=3)['normal'], (5, 3))


# Pinned from the PyTorch reference (4 nodes, all 8 primitives):
#   python /work/shared/bench/torch_darts_ref.py --layers L --channels C --batch 2 --iters 1 \
#       --warmup 0   -> params_m
# (8, 16): 1.930618, (5, 16): 1.275834, (3, 8): 0.209442, (2, 4): 0.065606
@pytest.mark.parametrize(
  'layers,channels,expected',
  [
    (8, 16, 1_930_618),
    (2, 4, 65_606),
    pytest.param(5, 16, 1_275_834, marks=pytest.mark.slow),
    pytest.param(3, 8, 209_442, marks=pytest.mark.slow),
  ],
)
def test_parameter_count_and_output_shape_match_reference(layers, channels, expected):
  net = SearchNetwork(channels=channels, layers=layers)
  x = jnp.zeros((2, 32, 32, 3))
  alphas = init_alphas(jax.random.key(1))
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x, alphas, train=True))
  assert ops.count_params(variables['params']) == expected
  logits = jax.eval_shape(lambda v: net.apply(v, x, alphas, train=False), variables)
  assert logits.shape == (2, 10)


def test_parameters_stay_float32_when_jax_enables_x64():
  # Under JAX_ENABLE_X64 Flax's initializers default to float64; a float64 kernel or running
  # statistic against the float32 batches the data pipeline yields broke the convolutions.
  net = SearchNetwork(**TINY)
  x = jnp.zeros((2, 8, 8, 3), jnp.float32)
  with jax.enable_x64():
    alphas = init_alphas(jax.random.key(1), nodes=2)
    variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x, alphas, train=False))
    logits, _ = jax.eval_shape(
      lambda v: net.apply(v, x, alphas, train=True, mutable=['batch_stats']), variables
    )
  assert {leaf.dtype for leaf in jax.tree.leaves((variables, alphas))} == {jnp.dtype('float32')}
  assert logits.dtype == jnp.float32


@pytest.fixture(scope='module')
def tiny_setup():
  net = SearchNetwork(**TINY, primitives=ops.PRIMITIVES)
  x = jax.random.normal(jax.random.key(3), (3, 8, 8, 3))
  alphas = jax.tree.map(lambda a: 0.5 * a / 1e-3, init_alphas(jax.random.key(4), nodes=2))
  variables = jax.jit(lambda k: net.init(k, x, alphas, train=True))(jax.random.key(0))
  return net, x, alphas, variables


def test_optimised_network_matches_plain_formulation(tiny_setup):
  net, x, alphas, variables = tiny_setup
  plain = PlainSearchNetwork(TINY['channels'], TINY['layers'], TINY['nodes'], TINY['multiplier'])
  plain_vars = {k: to_plain_layout(v, TINY['nodes']) for k, v in variables.items()}
  # the same variable tree: every name and shape the plain formulation creates exists
  reference_shapes = jax.eval_shape(lambda: plain.init(jax.random.key(0), x, alphas, train=True))
  chex.assert_trees_all_equal_shapes(reference_shapes, plain_vars)

  train_step = lambda model: jax.jit(
    lambda v: model.apply(v, x, alphas, train=True, mutable=['batch_stats'])
  )
  logits, updates = train_step(net)(variables)
  ref_logits, ref_updates = train_step(plain)(plain_vars)
  assert logits.shape == (3, 10)
  chex.assert_trees_all_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_close(
    to_plain_layout(updates['batch_stats'], TINY['nodes']),
    ref_updates['batch_stats'],
    atol=1e-5,
    rtol=1e-4,
  )

  trained = {'params': variables['params'], 'batch_stats': updates['batch_stats']}
  evaluate = lambda model: jax.jit(lambda v: model.apply(v, x, alphas, train=False))
  eval_logits = evaluate(net)(trained)
  ref_eval = evaluate(plain)({k: to_plain_layout(v, TINY['nodes']) for k, v in trained.items()})
  chex.assert_trees_all_close(eval_logits, ref_eval, atol=1e-4, rtol=1e-4)


def _gradients(model, params, stats, x, alphas):
  def loss(p, a):
    logits, _ = model.apply(
      {'params': p, 'batch_stats': stats}, x, a, train=True, mutable=['batch_stats']
    )
    return jnp.sum(jnp.sin(logits))

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, alphas)


def _assert_gradients_match_plain(remat: bool, tiny_setup):
  net, x, alphas, variables = tiny_setup
  plain = PlainSearchNetwork(TINY['channels'], TINY['layers'], TINY['nodes'], TINY['multiplier'])
  ref_params, ref_alphas = _gradients(
    plain,
    to_plain_layout(variables['params'], TINY['nodes']),
    to_plain_layout(variables['batch_stats'], TINY['nodes']),
    x,
    alphas,
  )
  d_params, d_alphas = _gradients(
    net.clone(remat=remat), variables['params'], variables['batch_stats'], x, alphas
  )
  chex.assert_trees_all_close(d_alphas, ref_alphas, atol=1e-4, rtol=1e-3)
  chex.assert_trees_all_close(
    to_plain_layout(d_params, TINY['nodes']), ref_params, atol=1e-4, rtol=1e-3
  )


def test_gradients_match_plain_formulation_with_remat(tiny_setup):
  """The hand-written conv VJPs and the recomputed (remat, the default) backward give the
  plain per-edge network's gradients for weights and alphas."""
  _assert_gradients_match_plain(True, tiny_setup)


@pytest.mark.slow  # ~45 s more compile; remat=False differs only by the nn.remat wrapper
def test_gradients_match_plain_formulation_without_remat(tiny_setup):
  _assert_gradients_match_plain(False, tiny_setup)


def test_grad_gates_skip_only_the_gradients_they_turn_off(tiny_setup):
  """Gates on give the ungated gradients (to rounding); the alphas gate off zeros the alphas'
  gradient only; the weights gate off zeros the mixed ops' kernel gradients only (the stem,
  preprocessing and classifier keep theirs), whatever the gates are at run time."""
  net, x, alphas, variables = tiny_setup
  net = net.clone(remat=True)

  def grads(gates):
    def loss(p, a, gates):
      logits, _ = net.apply(
        {'params': p, 'batch_stats': variables['batch_stats']},
        x,
        a,
        train=True,
        mutable=['batch_stats'],
        grad_gates=gates,
      )
      return jnp.sum(jnp.sin(logits))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'], alphas, gates)

  gates = lambda w, a: {'weights': jnp.asarray(w), 'alphas': jnp.asarray(a)}
  # the gated code sits in its own computations, so XLA may round differently
  close = dict(rtol=1e-4, atol=1e-7)
  d_params, d_alphas = grads(None)
  chex.assert_trees_all_close(grads(gates(True, True)), (d_params, d_alphas), **close)
  no_alpha = grads(gates(True, False))
  chex.assert_trees_all_close(no_alpha[0], d_params, **close)
  chex.assert_trees_all_equal(no_alpha[1], jax.tree.map(jnp.zeros_like, d_alphas))
  no_weights_params, no_weights_alphas = grads(gates(False, True))
  chex.assert_trees_all_close(no_weights_alphas, d_alphas, **close)
  flat = dict(jax.tree_util.tree_flatten_with_path(no_weights_params)[0])
  reference = dict(jax.tree_util.tree_flatten_with_path(d_params)[0])
  mixed_kernels = [
    k
    for k in flat
    if 'mixed_op' in jax.tree_util.keystr(k) and 'skip_connect' not in jax.tree_util.keystr(k)
  ]
  assert mixed_kernels
  for path, value in flat.items():
    if path in mixed_kernels:
      assert not np.any(np.asarray(value)), jax.tree_util.keystr(path)
    else:
      np.testing.assert_allclose(value, reference[path], **close)
  assert any(np.any(np.asarray(reference[k])) for k in mixed_kernels)


def _residual_bytes(fn, params) -> int:
  """Bytes the VJP of ``fn`` keeps from its forward pass: the leaves of the VJP closure,
  shapes only (traced, never compiled)."""
  closure = jax.eval_shape(lambda p: jax.vjp(fn, p)[1], params)
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(closure))


def _first_and_second_order_residuals(net, tiny_setup):
  _, x, alphas, variables = tiny_setup

  def loss(params):
    logits, _ = net.apply(
      {'params': params, 'batch_stats': variables['batch_stats']},
      x,
      alphas,
      train=True,
      mutable=['batch_stats'],
    )
    return jnp.sum(jnp.sin(logits))

  def unrolled_loss(params):  # the exact hypergradient differentiates through one SGD step
    step = jax.grad(loss)(params)
    return loss(jax.tree.map(lambda p, g: p - 0.1 * g, params, step))

  return (
    _residual_bytes(loss, variables['params']),
    _residual_bytes(unrolled_loss, variables['params']),
  )


def test_remat_bounds_second_order_residuals(tiny_setup):
  """Differentiating through an unrolled step keeps remat's saving: the mixed op is wrapped in
  two remats because the first derivative consumes one. A single remat let the second
  derivative save every mixed-op intermediate: 8.1x the first order's residuals, against 3.0x
  nested (no remat: 24x)."""
  net = tiny_setup[0]
  first, second = _first_and_second_order_residuals(net.clone(remat=True), tiny_setup)
  assert first > 0 and second <= 4 * first, (first, second)
  # the edge scans' cached traces hold the nested remat: trace afresh under the patch and after
  search_network._shared_scan.cache_clear()
  try:
    with mock.patch.object(
      search_network, '_RematMixedOp', search_network._remat_mixed_op(search_network.MixedOp)
    ):
      first_single, second_single = _first_and_second_order_residuals(
        net.clone(remat=True), tiny_setup
      )
  finally:
    search_network._shared_scan.cache_clear()
  assert first_single == first and second_single > 4 * first, (first, second_single)


def test_cells_of_equal_shapes_share_one_edge_scan_trace():
  """Seven cells (reductions at 2 and 4): normal cells 0/1 and 5/6 have equal shapes, so
  their edge scans trace once per pair; cell 3 and the two scans of each reduction cell are
  their own. Seven traces of an edge step, not nine, and the variables are unchanged."""
  net = SearchNetwork(channels=4, layers=7, nodes=2, multiplier=2)
  x = jnp.zeros((2, 8, 8, 3))
  alphas = init_alphas(jax.random.PRNGKey(0), nodes=2)
  variables = jax.jit(lambda x: net.init(jax.random.PRNGKey(1), x, alphas, train=False))(x)
  assert variables['params']['cell_1']['edges']['mixed_op']['sep_conv_3x3']['block1']['depthwise'][
    'kernel'
  ].shape == (num_edges(2), 3, 3, 1, 4)
  search_network._shared_scan.cache_clear()
  calls = []
  original = search_network._EdgeStep.__call__

  def counting(self, *args):
    calls.append(self.stride)
    return original(self, *args)

  try:
    with mock.patch.object(search_network._EdgeStep, '__call__', counting):
      jax.jit(lambda v: net.apply(v, x, alphas, train=True, mutable=['batch_stats'])).trace(
        variables
      )
  finally:
    search_network._shared_scan.cache_clear()
  assert sorted(calls) == [1, 1, 1, 1, 1, 2, 2], calls


def test_primitive_subset_changes_alpha_width_and_params():
  subset = ('skip_connect', 'sep_conv_3x3', 'max_pool_3x3')
  net = SearchNetwork(**TINY, primitives=subset)
  x = jnp.zeros((2, 8, 8, 3))
  alphas = init_alphas(jax.random.key(0), nodes=2, num_ops=len(subset))
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x, alphas, train=True))
  edge = variables['params']['cell_0']['edges']['mixed_op']
  assert set(edge) == {'sep_conv_3x3'}
  chex.assert_shape(edge['sep_conv_3x3']['block1']['depthwise']['kernel'], (5, 3, 3, 1, 4))


def test_bad_alphas_and_fields_raise_clear_errors(tiny_setup):
  net, x, alphas, variables = tiny_setup
  with pytest.raises(ValueError, match=r"alphas\['normal'\] must have shape \(5, 8\)"):
    net.apply(variables, x, init_alphas(jax.random.key(0), nodes=4), train=False)
  with pytest.raises(ValueError, match='primitives'):
    SearchNetwork(**TINY, primitives=('sep_conv_3x3', 'conv_7x7')).init(
      jax.random.key(0), x, init_alphas(jax.random.key(0), 2, 2), train=False
    )
  with pytest.raises(ValueError, match='multiplier'):
    SearchNetwork(channels=4, layers=3, nodes=2, multiplier=3).init(
      jax.random.key(0), x, init_alphas(jax.random.key(0), 2), train=False
    )
