"""Candidate operations of the DARTS search space as Flax modules (NHWC).

This module owns the eight DARTS primitives (``PRIMITIVES``), their building blocks
(``ReLUConvBN``, ``DilConv``, ``SepConv``, ``FactorizedReduce``, ``Zero``, ``Identity``,
``MaxPool``, ``AvgPool``) and ``make_op``, which builds one primitive exactly as the official
DARTS ``OPS`` table does. Every module takes ``affine``: the search supernet builds its ops with
affine-free batch norm, the evaluation network with affine batch norm. Convolutions have no bias
and use PyTorch's default initialisation; batch norm uses PyTorch's momentum (0.1) and eps
(1e-5). Every module is called as ``module(x, train=...)``: in training mode batch norm
normalises with batch statistics and updates its running statistics in the ``batch_stats``
collection, in evaluation mode it uses the running statistics. Every module that convolves takes
``conv_impl`` (``conv.CONV_IMPLS``, default 'auto': ``conv.resolve`` picks the XLA:CPU fast path
on CPU, plain ``lax`` convolutions on GPU/TPU); it changes the program, never the variables.
Precision follows the activations: a network that casts its input to bfloat16 (``PRECISIONS``)
runs every op in bfloat16, its kernels cast at use from float32 parameters, its batch norms
reducing in float32 into float32 running statistics; float32 inputs run exactly as before.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from skillearn_jax.nas import conv as conv_lib

PRIMITIVES = (
  'none',
  'max_pool_3x3',
  'avg_pool_3x3',
  'skip_connect',
  'sep_conv_3x3',
  'sep_conv_5x5',
  'dil_conv_3x3',
  'dil_conv_5x5',
)

# PyTorch's default Conv2d/Linear weight init (kaiming_uniform with a=sqrt(5)) is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in).
# float32 pinned: the initializer's default would follow JAX_ENABLE_X64, and a
# float64 kernel against float32 activations fails in the convolution.
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(
  1.0 / 3.0, 'fan_in', 'uniform', dtype=jnp.float32
)

# The networks' `precision`: the dtype of activations and convolutions; parameters, batch
# statistics, optimizer states and losses stay float32 whatever it is.
PRECISIONS = ('float32', 'bfloat16')
LOW_PRECISION = (jnp.bfloat16, jnp.float16)


def low_precision(x):
  """``x``'s dtype when it is a low-precision float (bfloat16, float16), else None: the dtype
  a module casts its float32 parameters to (None: leave them, the float32 program as before)."""
  return x.dtype if x.dtype in LOW_PRECISION else None


def at_precision(param, x):
  """``param`` (float32) cast to ``x``'s low-precision dtype, or unchanged."""
  dtype = low_precision(x)
  return param if dtype is None else param.astype(dtype)


BN_MOMENTUM = 0.9  # Flax keeps `momentum` of the old value: PyTorch momentum 0.1.
BN_EPSILON = 1e-5


def batch_norm(affine: bool, train: bool, name: str | None = None, dtype=None) -> nn.BatchNorm:
  """Batch norm with PyTorch's defaults; scale and bias only when ``affine``. ``dtype`` (from
  ``low_precision`` of its input) is its output's: Flax reduces in float32 and keeps the
  statistics and the scale and bias float32; None keeps the float32 module as before."""
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    use_scale=affine,
    use_bias=affine,
    name=name,
    **({} if dtype is None else {'dtype': dtype}),
  )


class Conv(nn.Module):
  """Bias-free 2-D convolution with symmetric integer padding, as ``torch.nn.Conv2d``, run by
  ``conv.convolve`` with ``conv_impl``; its ``kernel`` is laid out as ``nn.Conv``'s
  (k, k, C_in / groups, C_out)."""

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  groups: int = 1
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param(
      'kernel', TORCH_DEFAULT_INIT, (k, k, x.shape[-1] // self.groups, self.features)
    )
    return conv_lib.convolve(
      x,
      at_precision(kernel, x),
      self.stride,
      self.padding,
      self.dilation,
      self.groups,
      impl=self.conv_impl,
    )


def conv(
  features: int,
  kernel_size: int,
  stride: int = 1,
  padding: int = 0,
  dilation: int = 1,
  groups: int = 1,
  name: str | None = None,
  conv_impl: str = 'auto',
) -> Conv:
  """Bias-free 2-D convolution with symmetric integer padding, as ``torch.nn.Conv2d``."""
  return Conv(features, kernel_size, stride, padding, dilation, groups, conv_impl, name=name)


def depthwise_conv(x, kernel, stride: int = 1, dilation: int = 1, conv_impl: str = 'auto'):
  """Depthwise conv of NHWC ``x`` with ``kernel`` (k, k, 1, C), 'same' zero padding
  ``dilation * (k // 2)``, no bias (``conv.depthwise_conv``)."""
  return conv_lib.depthwise_conv(x, kernel, stride, dilation, impl=conv_impl)


class DepthwiseConv(nn.Module):
  """Depthwise kxk conv (``depthwise_conv``); its kernel is laid out as ``nn.Conv``'s."""

  kernel_size: int
  stride: int = 1
  dilation: int = 1
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
      'kernel', TORCH_DEFAULT_INIT, (self.kernel_size, self.kernel_size, 1, x.shape[-1])
    )
    return depthwise_conv(x, at_precision(kernel, x), self.stride, self.dilation, self.conv_impl)


class Zero(nn.Module):
  """The 'none' op: zeros, subsampled like a strided op when ``stride`` > 1."""

  stride: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    return jnp.zeros_like(x[:, :: self.stride, :: self.stride, :])


class Identity(nn.Module):
  """The stride-1 'skip_connect' op."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    return x


class MaxPool(nn.Module):
  """3x3 max pooling, padding 1 (padded cells never win)."""

  stride: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    return nn.max_pool(x, (3, 3), strides=(self.stride, self.stride), padding=((1, 1), (1, 1)))


class AvgPool(nn.Module):
  """3x3 average pooling, padding 1, padded cells excluded from the count."""

  stride: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    return nn.avg_pool(
      x,
      (3, 3),
      strides=(self.stride, self.stride),
      padding=((1, 1), (1, 1)),
      count_include_pad=False,
    )


class ReLUConvBN(nn.Module):
  """ReLU -> conv (no bias) -> batch norm."""

  channels: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  affine: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = conv(
      self.channels,
      self.kernel_size,
      self.stride,
      self.padding,
      name='conv',
      conv_impl=self.conv_impl,
    )(nn.relu(x))
    return batch_norm(self.affine, train, name='bn', dtype=low_precision(x))(x)


class DilConv(nn.Module):
  """ReLU -> depthwise kxk (stride, dilation) -> pointwise 1x1 -> batch norm."""

  channels: int
  kernel_size: int
  stride: int
  padding: int
  dilation: int
  affine: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.padding != self.dilation * (self.kernel_size // 2):
      raise ValueError(
        f'DilConv: only same padding dilation * (kernel_size // 2) is '
        f'supported, got padding={self.padding}'
      )
    x = DepthwiseConv(
      self.kernel_size, self.stride, self.dilation, self.conv_impl, name='depthwise'
    )(nn.relu(x))
    x = conv(self.channels, 1, name='pointwise', conv_impl=self.conv_impl)(x)
    return batch_norm(self.affine, train, name='bn', dtype=low_precision(x))(x)


class SepConv(nn.Module):
  """Two stacked DilConv blocks with dilation 1; the stride applies to the first only."""

  channels: int
  kernel_size: int
  stride: int
  padding: int
  affine: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, *, train: bool):
    k, p, impl = self.kernel_size, self.padding, self.conv_impl
    x = DilConv(x.shape[-1], k, self.stride, p, 1, self.affine, impl, name='block1')(x, train=train)
    return DilConv(self.channels, k, 1, p, 1, self.affine, impl, name='block2')(x, train=train)


class FactorizedReduce(nn.Module):
  """Halve the resolution: ReLU, two 1x1 stride-2 convs (the second on the input shifted by
  one pixel), each with half the output channels, concatenated, then batch norm."""

  channels: int
  affine: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.channels % 2:
      raise ValueError(f'FactorizedReduce: channels must be even, got {self.channels}')
    x = nn.relu(x)
    half = self.channels // 2
    y = jnp.concatenate(
      [
        conv(half, 1, stride=2, name='conv_1', conv_impl=self.conv_impl)(x),
        conv(half, 1, stride=2, name='conv_2', conv_impl=self.conv_impl)(x[:, 1:, 1:, :]),
      ],
      axis=-1,
    )
    return batch_norm(self.affine, train, name='bn', dtype=low_precision(y))(y)


def make_op(
  name: str,
  channels: int,
  stride: int,
  affine: bool,
  module_name: str | None = None,
  conv_impl: str = 'auto',
) -> nn.Module:
  """The primitive ``name`` mapping ``channels`` to ``channels`` at ``stride`` (1 or 2),
  as in the official DARTS ``OPS`` table (pooling ops carry no batch norm here); its
  convolutions run by ``conv_impl``."""
  if stride not in (1, 2):
    raise ValueError(f'make_op: stride must be 1 or 2, got {stride}')
  kw = dict(name=module_name)
  if name == 'none':
    return Zero(stride, **kw)
  if name == 'max_pool_3x3':
    return MaxPool(stride, **kw)
  if name == 'avg_pool_3x3':
    return AvgPool(stride, **kw)
  if name == 'skip_connect':
    return Identity(**kw) if stride == 1 else FactorizedReduce(channels, affine, conv_impl, **kw)
  if name in ('sep_conv_3x3', 'sep_conv_5x5'):
    k = int(name[-1])
    return SepConv(channels, k, stride, k // 2, affine, conv_impl, **kw)
  if name in ('dil_conv_3x3', 'dil_conv_5x5'):
    k = int(name[-1])
    return DilConv(channels, k, stride, k - 1, 2, affine, conv_impl, **kw)
  raise ValueError(f'make_op: unknown primitive {name!r}; allowed: {", ".join(PRIMITIVES)}')


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
