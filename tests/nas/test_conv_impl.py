"""Tests for the convolution implementations (conv.CONV_IMPLS): 'cpu_fast' and 'xla' give the
same values, first derivatives and second derivatives (forward over reverse), op by op
(conv.convolve, conv.depthwise_conv) and on a tiny SearchNetwork; 'auto' resolves to
'cpu_fast' on CPU and 'xla' elsewhere, unknown names are refused; the implementation changes
no variable (parameter trees of the search and evaluation networks are identical); and 'xla'
programs hold plain lax convolutions only."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import darts as darts_config
from skillearn_jax.nas import conv, ops
from skillearn_jax.nas.eval_network import make_eval_network
from skillearn_jax.nas.search_network import SearchNetwork, init_alphas
from skillearn_jax.skills import nas_search

IMPLS = ('cpu_fast', 'xla')
TINY = dict(channels=4, layers=3, nodes=2, multiplier=2)  # cells: normal, reduce, reduce

# (size, channels, kernel, stride, padding, dilation, out_channels)
DENSE_CASES = [
  (8, 3, 3, 1, 1, 1, 4),  # stem-like
  (8, 4, 3, 2, 1, 1, 5),  # strided
  (7, 4, 5, 2, 2, 1, 3),  # odd size, strided, 5x5
  (8, 4, 3, 1, 2, 2, 4),  # dilated (polyphase on cpu_fast)
  (8, 4, 3, 2, 2, 2, 4),  # dilated, strided
  (8, 4, 2, 1, 0, 1, 6),  # even kernel, no padding
  (8, 4, 1, 2, 0, 1, 2),  # 1x1 strided (FactorizedReduce)
]
# (size, channels, kernel, stride, dilation)
DEPTHWISE_CASES = [
  (8, 4, 3, 1, 1),
  (8, 4, 5, 2, 1),
  (8, 4, 3, 1, 2),
  (8, 4, 5, 2, 2),
  (7, 4, 3, 2, 2),  # odd size: cpu_fast dilates the kernel
]


def _value_and_derivatives(fn, x, kernel):
  """``fn``'s value, its gradient and the gradient's derivative along a fixed direction
  (forward over reverse, as exact hypergradients take it), in (x, kernel)."""
  grad = jax.grad(lambda x, k: jnp.sum(jnp.sin(fn(x, k))), argnums=(0, 1))
  tangents = (jnp.cos(x), jnp.sin(kernel))
  first, second = jax.jvp(grad, (x, kernel), tangents)
  return fn(x, kernel), first, second


def _assert_impls_agree(fn, x, kernel):
  results = [_value_and_derivatives(lambda x, k: fn(x, k, impl), x, kernel) for impl in IMPLS]
  for a, b in zip(*map(jax.tree.leaves, results)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('case', DENSE_CASES, ids=str)
def test_dense_conv_impls_agree_to_second_order(case):
  size, c, k, stride, padding, dilation, out = case
  rng = np.random.default_rng(0)
  with jax.enable_x64():
    x = jnp.asarray(rng.normal(size=(2, size, size, c)))
    kernel = jnp.asarray(rng.normal(size=(k, k, c, out)))
    _assert_impls_agree(
      lambda x, w, impl: conv.convolve(x, w, stride, padding, dilation, impl=impl), x, kernel
    )


@pytest.mark.parametrize('case', DEPTHWISE_CASES, ids=str)
def test_depthwise_conv_impls_agree_to_second_order(case):
  size, c, k, stride, dilation = case
  rng = np.random.default_rng(1)
  with jax.enable_x64():
    x = jnp.asarray(rng.normal(size=(2, size, size, c)))
    kernel = jnp.asarray(rng.normal(size=(k, k, 1, c)))
    _assert_impls_agree(
      lambda x, w, impl: conv.depthwise_conv(x, w, stride, dilation, impl=impl), x, kernel
    )


def test_resolve_auto_and_refuse_unknown_names(monkeypatch):
  assert conv.CONV_IMPLS == ('auto', 'cpu_fast', 'xla')
  # here 'cpu_fast'; on the GPU of benchmarks/device_check.sh, 'xla' (cuDNN)
  native = 'cpu_fast' if jax.default_backend() == 'cpu' else 'xla'
  assert conv.resolve('auto') == native
  assert [conv.resolve(i) for i in IMPLS] == list(IMPLS)
  for bad in ('cudnn', 'AUTO', None):
    with pytest.raises(ValueError, match=r"'auto', 'cpu_fast', 'xla'"):
      conv.resolve(bad)
  # the networks resolve 'auto' when built, so they carry the concrete name
  assert SearchNetwork().conv_impl == native
  assert make_eval_network('cifar', 'DARTS_V2', layers=3, channels=8).conv_impl == native
  with pytest.raises(ValueError, match='conv_impl must be one of'):
    SearchNetwork(conv_impl='gpu')
  with pytest.raises(ValueError, match='conv_impl must be one of'):
    make_eval_network('cifar', 'DARTS_V2', conv_impl='gpu')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert conv.resolve('auto') == 'xla'
  assert SearchNetwork().conv_impl == 'xla'
  assert make_eval_network('imagenet', 'DARTS_V2').conv_impl == 'xla'
  # and a search config's supernet, built as a GPU run builds it, in either precision
  for precision in ('float32', 'bfloat16'):
    config = darts_config.get_config('quick')
    config.net.precision = precision
    net = nas_search.make_supernet(config, 10)
    assert (net.conv_impl, net.precision) == ('xla', precision)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  assert nas_search.make_supernet(darts_config.get_config('quick'), 10).conv_impl == 'cpu_fast'


def _conv_primitives(jaxpr_text: str) -> set:
  return {
    name
    for name in ('conv_general_dilated', 'skillearn_valid_conv', 'skillearn_depthwise')
    if name in jaxpr_text
  }


def test_xla_impl_runs_plain_lax_convolutions():
  x = jnp.ones((2, 8, 8, 4))
  kernel = jnp.ones((3, 3, 1, 4))
  for stride, dilation in ((1, 1), (2, 2)):
    for impl, expected in (('xla', {'conv_general_dilated'}), ('cpu_fast', None)):
      fn = lambda x, k: conv.depthwise_conv(x, k, stride, dilation, impl=impl)
      jaxpr = jax.make_jaxpr(jax.grad(lambda x, k: jnp.sum(fn(x, k)), argnums=(0, 1)))(x, kernel)
      found = _conv_primitives(str(jaxpr))
      if expected:
        assert found == expected, found
        # one grouped conv in the forward pass, cuDNN's depthwise form
        assert 'feature_group_count=4' in str(jaxpr)
      else:
        assert 'skillearn_depthwise' in found, found


def test_networks_built_with_xla_hold_no_cpu_fast_primitive():
  """Every convolution of the search and evaluation networks (forward and gradient) follows
  the network's conv_impl: 'xla' traces plain lax convolutions only (traced, not compiled)."""
  x, images = jnp.ones((2, 8, 8, 3)), jnp.ones((2, 32, 32, 3))
  alphas = init_alphas(jax.random.key(0), nodes=TINY['nodes'])
  for impl in IMPLS:
    search = SearchNetwork(**TINY, conv_impl=impl)
    evaluation = make_eval_network('cifar', 'DARTS_V2', layers=3, channels=8, conv_impl=impl)
    search_vars = jax.eval_shape(lambda: search.init(jax.random.key(0), x, alphas, train=True))
    eval_vars = jax.eval_shape(lambda: evaluation.init(jax.random.key(0), images, train=True))

    def search_loss(params, alphas, stats, search=search):
      variables = {'params': params, 'batch_stats': stats}
      out, _ = search.apply(variables, x, alphas, train=True, mutable=['batch_stats'])
      return jnp.sum(out)

    def eval_loss(params, stats, evaluation=evaluation):
      variables = {'params': params, 'batch_stats': stats}
      (logits, aux), _ = evaluation.apply(variables, images, train=True, mutable=['batch_stats'])
      return jnp.sum(logits) + jnp.sum(aux)

    traced = [
      jax.jit(jax.grad(search_loss, argnums=(0, 1))).trace(
        search_vars['params'], alphas, search_vars['batch_stats']
      ),
      jax.jit(jax.grad(eval_loss)).trace(eval_vars['params'], eval_vars['batch_stats']),
    ]
    for trace in traced:
      found = _conv_primitives(str(trace.jaxpr))
      if impl == 'xla':
        assert found == {'conv_general_dilated'}, found
      else:
        assert {'skillearn_valid_conv', 'skillearn_depthwise'} <= found, found


# the conv primitives' depthwise geometries (3x3 dilation 1, 5x5 dilation 2, each at stride 1
# and 2) and the strided skip's FactorizedReduce; pools and 'none' convolve nothing
SEARCH_PRIMITIVES = ('skip_connect', 'sep_conv_3x3', 'dil_conv_5x5')
# two reduction cells (strided input edges, stride-1 node edges, both preprocessings): a
# normal cell's edges are the node edges' stride-1 mixed op again, and cost a third more compile
SEARCH_TINY = dict(TINY, layers=2)


def test_search_network_impls_agree_to_second_order():
  """Logits, gradients w.r.t. weights and alphas, and the derivative of that gradient along
  a direction in (weights, alphas), equal under both implementations (float64)."""
  with jax.enable_x64():
    net = SearchNetwork(**SEARCH_TINY, primitives=SEARCH_PRIMITIVES, conv_impl='xla')
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3), jnp.float32)
    alphas = init_alphas(jax.random.key(4), TINY['nodes'], len(SEARCH_PRIMITIVES))
    alphas = jax.tree.map(lambda a: 0.5 * a / 1e-3, alphas)
    variables = jax.jit(lambda k: net.init(k, x, alphas, train=True))(jax.random.key(0))
    params, stats, x, alphas = jax.tree.map(
      lambda a: a.astype(jnp.float64), (variables['params'], variables['batch_stats'], x, alphas)
    )
    results = []
    for impl in IMPLS:
      model = net.clone(conv_impl=impl)

      def loss(params, alphas, model=model):
        logits, _ = model.apply(
          {'params': params, 'batch_stats': stats}, x, alphas, train=True, mutable=['batch_stats']
        )
        return jnp.sum(jnp.sin(logits)), logits

      def step(params, alphas, loss=loss):
        grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
        direction = jax.tree.map(jnp.cos, (params, alphas))
        (first, logits), (second, _) = jax.jvp(grad, (params, alphas), direction)
        return logits, first, second

      results.append(jax.jit(step)(params, alphas))
  for a, b in zip(*map(jax.tree.leaves, results)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_parameter_trees_do_not_depend_on_impl():
  x, images = jnp.ones((1, 8, 8, 3)), jnp.ones((1, 32, 32, 3))
  alphas = init_alphas(jax.random.key(0), nodes=TINY['nodes'])
  shapes = {}
  for impl in IMPLS:
    search = SearchNetwork(**TINY, conv_impl=impl)
    evaluation = make_eval_network('cifar', 'DARTS_V2', layers=3, channels=8, conv_impl=impl)
    shapes[impl] = (
      jax.eval_shape(lambda: search.init(jax.random.key(0), x, alphas, train=False)),
      jax.eval_shape(lambda: evaluation.init(jax.random.key(0), images, train=False)),
    )
  chex.assert_trees_all_equal_shapes_and_dtypes(shapes['cpu_fast'], shapes['xla'])
  for a, b in zip(shapes['cpu_fast'], shapes['xla']):
    assert ops.count_params(a['params']) == ops.count_params(b['params']) > 0
