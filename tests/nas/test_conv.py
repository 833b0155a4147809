"""Tests for skillearn_jax.nas.conv: conv2d equals lax.conv_general_dilated in
value, gradient and second derivative, reverse over reverse and forward over
reverse (float64), and under vmap, over the strides, paddings, dilations,
groups and odd/even sizes the networks use; bad groups are refused; and the
step XLA runs holds no non-canonical (slow) convolution."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from skillearn_jax.nas import conv

# (size, channels, kernel, stride, padding, dilation, groups, out_channels)
CASES = [
  (8, 4, 3, 1, 1, 1, 1, 6),  # dense 3x3
  (8, 4, 5, 2, 2, 1, 1, 4),  # dense strided
  (7, 4, 3, 2, 1, 1, 1, 4),  # odd size, strided
  (9, 3, 3, 2, 1, 1, 1, 5),  # stem-like
  (8, 4, 3, 3, 1, 1, 1, 5),  # stride 3
  (9, 4, 2, 1, 0, 1, 1, 3),  # even kernel, valid
  (8, 4, 1, 2, 0, 1, 1, 6),  # 1x1 strided (FactorizedReduce)
  (8, 4, 3, 1, 2, 2, 4, 4),  # depthwise dilated (polyphase)
  (8, 4, 5, 2, 4, 2, 4, 4),  # depthwise dilated strided
  (7, 4, 5, 1, 4, 2, 4, 4),  # odd size: dilated kernel
  (8, 6, 5, 1, 2, 1, 6, 6),  # depthwise 5x5
  (8, 6, 3, 2, 1, 1, 6, 6),  # depthwise strided
  (7, 6, 3, 1, 2, 2, 6, 6),  # depthwise, odd, dilated
  (8, 6, 1, 1, 0, 1, 6, 6),  # depthwise 1x1
]


def lax_conv2d(x, kernel, stride=1, padding=0, dilation=1, groups=1):
  """The truth conv2d is checked against (also the plain network's in test_search_network)."""
  return lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    ((padding, padding), (padding, padding)),
    rhs_dilation=(dilation, dilation),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    feature_group_count=groups,
  )


def _derivatives(fn):
  first = jax.grad(lambda x, k: jnp.sum(jnp.sin(fn(x, k))), argnums=(0, 1))

  def second(x, k):
    gx, gk = first(x, k)
    return jnp.sum(gx**2) + jnp.sum(jnp.cos(gk))

  def forward_over_reverse(x, k):
    tangents = (jnp.cos(x), jnp.sin(k))
    return jax.jvp(first, (x, k), tangents)[1]

  def batched(x, k):  # two copies of the inputs, the second scaled
    return jax.vmap(fn)(jnp.stack([x, 2 * x]), jnp.stack([k, -k]))

  return (fn, first, jax.grad(second, argnums=(0, 1)), forward_over_reverse, batched)


@pytest.mark.parametrize('case', CASES, ids=str)
def test_matches_lax_conv_to_second_order(case):
  size, c, k, stride, padding, dilation, groups, out = case
  rng = np.random.default_rng(0)
  with jax.enable_x64():
    x = jnp.asarray(rng.normal(size=(2, size, size, c)))
    kernel = jnp.asarray(rng.normal(size=(k, k, c // groups, out)))
    args = (stride, padding, dilation, groups)
    ours = _derivatives(lambda x, w: conv.conv2d(x, w, *args))
    truth = _derivatives(lambda x, w: lax_conv2d(x, w, *args))
    for mine, ref in zip(ours, truth):
      for a, b in zip(jax.tree.leaves(mine(x, kernel)), jax.tree.leaves(ref(x, kernel))):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_bad_groups_are_refused():
  x = jnp.zeros((1, 4, 4, 6))
  with pytest.raises(ValueError, match='groups must be 1 or the channel count'):
    conv.conv2d(x, jnp.zeros((3, 3, 3, 6)), groups=2)
  with pytest.raises(ValueError, match='stride and dilation'):
    conv.conv2d(x, jnp.zeros((3, 3, 6, 6)), stride=0)


def _loop_body_conv_labels(hlo: str) -> set:
  """dim_labels of the convolutions inside while-loop bodies of compiled HLO."""
  bodies = set(re.findall(r'body=%?([\w.\-]+)', hlo))
  labels, computation = set(), None
  for line in hlo.splitlines():
    header = re.match(r'^(?:ENTRY )?%?([\w.\-]+) ', line)
    if header and line.rstrip().endswith('{'):
      computation = header.group(1)
    if 'convolution(' in line and computation in bodies:
      labels.add(re.search(r'dim_labels=([\w>-]+)', line).group(1))
  return labels


@pytest.mark.parametrize('groups', [1, 4])
@pytest.mark.parametrize('order', [1, 2, 'forward_over_reverse'])
def test_scanned_backward_avoids_the_slow_weight_gradient_form(order, groups):
  """Inside lax.scan, XLA:CPU compiles the weight-gradient convs of JAX's own
  transpose rule (dim_labels f01b_i01o->01bf) as naive loops, 40x slower;
  conv2d's derivatives must not produce them, at first or second order
  (reverse or forward over reverse), dense or depthwise."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
  kernels = jnp.asarray(rng.normal(size=(3, 3, 3, 4 // groups, 4)), jnp.float32)

  def loss_with(conv_fn):
    def loss(ks, x):
      def body(y, k):
        return jnp.tanh(conv_fn(y, k)), None

      return jnp.sum(lax.scan(body, x, ks)[0] ** 2)

    if order == 1:
      return loss
    if order == 2:
      return lambda ks, x: jnp.sum(jax.grad(loss)(ks, x) ** 2)
    # the gradient's directional derivative along ks, reduced to a scalar
    return lambda ks, x: jnp.sum(jax.jvp(lambda ks: jax.grad(loss)(ks, x), (ks,), (ks,))[1] ** 2)

  def body_labels(conv_fn):
    step = jax.jit(jax.grad(loss_with(conv_fn)))
    return _loop_body_conv_labels(step.lower(kernels, x).compile().as_text())

  slow = 'f01b_i01o->01bf'
  assert slow in body_labels(lambda y, k: lax_conv2d(y, k, 1, 1, 1, groups))
  ours = body_labels(lambda y, k: conv.conv2d(y, k, padding=1, groups=groups))
  assert ours and slow not in ours, ours
