"""Tests for skillearn_jax.nas.ops: primitive numerics against numpy truth, shapes, parameter
counts (hand-computed) and batch-norm running statistics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.nas import ops


def numpy_depthwise(x, kernel, stride, dilation):
  """Direct 'same' depthwise correlation (padding dilation * (k // 2)), loops over taps."""
  k = kernel.shape[0]
  pad = dilation * (k // 2)
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h, out_w = (h - 1) // stride + 1, (w - 1) // stride + 1
  out = np.zeros((n, out_h, out_w, c), np.float64)
  for i in range(k):
    for j in range(k):
      window = xp[:, i * dilation :, j * dilation :, :][:, :h:stride, :w:stride, :]
      out += window[:, :out_h, :out_w, :] * kernel[i, j, 0]
  return out


def apply_eval(module, x):
  """Apply with freshly initialised variables in evaluation mode (running mean 0, var 1)."""
  variables = module.init(jax.random.key(0), x, train=False)
  return module.apply(variables, x, train=False), variables


def test_primitives_order_matches_darts():
  assert ops.PRIMITIVES == (
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'skip_connect',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'dil_conv_3x3',
    'dil_conv_5x5',
  )


@pytest.mark.parametrize(
  'k,stride,dilation,size',
  [
    (3, 1, 1, 8),
    (5, 2, 1, 8),
    (3, 1, 2, 8),
    (5, 1, 2, 8),
    (3, 2, 2, 8),
    (5, 2, 2, 8),
    (3, 1, 2, 7),
    (5, 2, 2, 7),
  ],
)  # size 7: odd sizes take the dilated-conv fallback
def test_depthwise_conv_matches_numpy(k, stride, dilation, size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
  kernel = rng.normal(size=(k, k, 1, 3)).astype(np.float32)
  got = ops.depthwise_conv(jnp.asarray(x), jnp.asarray(kernel), stride, dilation)
  np.testing.assert_allclose(got, numpy_depthwise(x, kernel, stride, dilation), atol=1e-4)


def test_dilated_conv_receptive_field_is_the_dilation_2_grid():
  x = np.zeros((1, 11, 11, 1), np.float32)
  x[0, 5, 5, 0] = 1.0
  y = np.asarray(ops.depthwise_conv(jnp.asarray(x), jnp.ones((3, 3, 1, 1)), 1, 2))[0, :, :, 0]
  rows, cols = np.nonzero(y)
  assert sorted(set(rows)) == [3, 5, 7] and sorted(set(cols)) == [3, 5, 7]
  assert len(rows) == 9


def test_avg_pool_excludes_padding_from_the_count():
  x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  y = np.asarray(ops.AvgPool(1).apply({}, jnp.asarray(x)))[0, :, :, 0]
  grid = x[0, :, :, 0]
  assert y[0, 0] == pytest.approx(grid[:2, :2].mean())  # 4 valid cells
  assert y[0, 1] == pytest.approx(grid[:2, :3].mean())  # 6 valid cells
  assert y[1, 1] == pytest.approx(grid[:3, :3].mean())  # 9 valid cells
  y2 = np.asarray(ops.AvgPool(2).apply({}, jnp.asarray(x)))[0, :, :, 0]
  assert y2.shape == (2, 2)
  assert y2[1, 1] == pytest.approx(grid[1:4, 1:4].mean())


def test_max_pool_padding_never_wins():
  x = -1.0 - np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  y = np.asarray(ops.MaxPool(1).apply({}, jnp.asarray(x)))[0, :, :, 0]
  assert y[0, 0] == -1.0 and y[3, 3] == x[0, 2, 2, 0]


def test_zero_op_subsamples_at_stride_2():
  x = jnp.ones((2, 8, 8, 4))
  assert ops.Zero(2).apply({}, x).shape == (2, 4, 4, 4)
  assert float(jnp.abs(ops.Zero(1).apply({}, x)).sum()) == 0.0


def test_factorized_reduce_shapes_and_one_pixel_shift():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)).astype(np.float32))
  module = ops.FactorizedReduce(6, affine=False)
  variables = module.init(jax.random.key(0), x, train=False)
  # identity-like 1x1 kernels: each half copies input channels 0..2
  eye = jnp.eye(4, 3)[None, None]
  params = {'conv_1': {'kernel': eye}, 'conv_2': {'kernel': eye}}
  y = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=False)
  assert y.shape == (2, 4, 4, 6)
  relu = np.maximum(np.asarray(x), 0.0)[..., :3] / np.sqrt(1.0 + ops.BN_EPSILON)
  np.testing.assert_allclose(y[..., :3], relu[:, ::2, ::2], atol=1e-6)
  np.testing.assert_allclose(y[..., 3:], relu[:, 1::2, 1::2], atol=1e-6)


def test_factorized_reduce_rejects_odd_channels():
  with pytest.raises(ValueError, match='channels'):
    ops.FactorizedReduce(5).init(jax.random.key(0), jnp.ones((1, 4, 4, 5)), train=False)


# Hand-computed for C=4: depthwise k*k*C + pointwise C*C per block; sep convs have 2 blocks;
# FactorizedReduce: two 1x1 convs C -> C/2; affine-free BN and pools have no parameters.
EXPECTED_PARAMS_C4 = {
  ('none', 1): 0,
  ('max_pool_3x3', 1): 0,
  ('avg_pool_3x3', 1): 0,
  ('skip_connect', 1): 0,
  ('skip_connect', 2): 2 * 4 * 2,
  ('sep_conv_3x3', 1): 2 * (9 * 4 + 16),
  ('sep_conv_5x5', 2): 2 * (25 * 4 + 16),
  ('dil_conv_3x3', 1): 9 * 4 + 16,
  ('dil_conv_5x5', 2): 25 * 4 + 16,
}


@pytest.mark.parametrize('name,stride', sorted(EXPECTED_PARAMS_C4))
def test_make_op_shapes_and_parameter_counts(name, stride):
  x = jnp.ones((2, 8, 8, 4))
  module = ops.make_op(name, 4, stride, affine=False)
  variables = module.init(jax.random.key(0), x, train=True)
  y, _ = module.apply(variables, x, train=True, mutable=['batch_stats'])
  assert y.shape == (2, 8 // stride, 8 // stride, 4)
  assert ops.count_params(variables.get('params', {})) == EXPECTED_PARAMS_C4[(name, stride)]


def test_affine_adds_batch_norm_scale_and_bias():
  x = jnp.ones((2, 8, 8, 4))
  count = lambda affine: ops.count_params(
    ops.make_op('dil_conv_3x3', 4, 1, affine).init(jax.random.key(0), x, train=False)['params']
  )
  assert count(True) - count(False) == 2 * 4


def test_make_op_rejects_bad_arguments():
  with pytest.raises(ValueError, match='unknown primitive'):
    ops.make_op('conv_7x7', 4, 1, affine=True)
  with pytest.raises(ValueError, match='stride'):
    ops.make_op('sep_conv_3x3', 4, 3, affine=True)


def test_batch_norm_uses_batch_statistics_and_torch_momentum():
  rng = np.random.default_rng(2)
  x = jnp.asarray(3.0 + 2.0 * rng.normal(size=(4, 6, 6, 2)).astype(np.float32))
  module = ops.ReLUConvBN(2, affine=False)
  variables = module.init(jax.random.key(0), x, train=True)
  y, updates = module.apply(variables, x, train=True, mutable=['batch_stats'])
  conv_out = np.maximum(np.asarray(x), 0) @ np.asarray(variables['params']['conv']['kernel'][0, 0])
  mean, var = conv_out.mean((0, 1, 2)), conv_out.var((0, 1, 2))
  np.testing.assert_allclose(y, (conv_out - mean) / np.sqrt(var + 1e-5), atol=1e-4)
  stats = updates['batch_stats']['bn']
  np.testing.assert_allclose(stats['mean'], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * var, rtol=1e-5)
  y_eval, _ = apply_eval(module, x)
  chex.assert_trees_all_close(y_eval, conv_out / np.sqrt(1 + 1e-5), atol=1e-4)
