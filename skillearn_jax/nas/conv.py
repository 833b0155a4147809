"""2-D convolutions (NHWC, HWIO) for every network here, and the choice of their implementation.

This module owns the convolution implementations (``CONV_IMPLS``: 'auto', 'cpu_fast', 'xla'),
``resolve``, which turns 'auto' into the concrete one for the default backend ('cpu_fast' on
CPU, 'xla' on GPU/TPU), the entry points the networks call with an implementation
(``convolve``: dense or depthwise with stride, padding and dilation; ``depthwise_conv``: 'same'
padded depthwise), ``lax_conv2d``, the 'xla' implementation (plain ``lax.conv_general_dilated``,
which GPUs run with cuDNN), and ``conv2d``, the 'cpu_fast' implementation, which stays on
XLA:CPU's fast path at every derivative order. Both give the same values up to float rounding;
what differs in ``conv2d`` is the program XLA sees:
- every convolution XLA runs is a stride-1, undilated, 'VALID' conv with canonical
  NHWC/HWIO/NHWC layout. XLA:CPU hands those to its Eigen kernels, while the weight-gradient
  convs JAX's own transpose rule emits (``f01b_i01o->01bf``) are compiled as naive loops
  inside ``lax.scan`` bodies: 40x slower than the unrolled program on a 14-step scan of 5x5
  convs, and the reason a scanned supernet's backward pass took 60 s a step. So the three
  stride-1 convs here (dense, depthwise, and the depthwise kernel gradient) are primitives of
  their own, each bilinear in its two arguments: its JVP is two calls of itself and its
  transposes are written out in terms of the three, so derivatives of every order, reverse
  over reverse or forward over reverse (exact hypergradients' jvp of a gradient), stay on
  the same path (a ``jax.custom_vjp`` would have blocked forward mode);
- stride s is the sum over the s x s polyphase components of the padded input of stride-1
  convs with the matching kernel phases; dilation 2 at even sizes is a stride-1 conv on the
  input's 2x2 polyphase components; other dilations dilate the kernel with zeros;
- 1x1 convs are a contraction (no window at all);
- a depthwise conv (``groups`` = channels) is a sum of the k*k shifted input windows, each
  scaled by its tap: one elementwise loop that XLA fuses, where XLA:CPU's grouped conv is
  5-20x slower and a dense conv with a block-diagonal kernel does ``channels`` times the work.
  Its input gradient is the same sum over the padded output gradient with the flipped kernel;
  its kernel gradient (the windows' correlation with the output gradient, summed over the
  batch) is one canonical grouped conv with the batch as each group's input features, whose
  own VJP is again shifted sums, so every derivative order stays on the fast path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def _pad_full(g, kernel):
  """``g`` padded by the kernel size - 1 on each side: the input of a 'FULL' conv."""
  kh, kw = kernel.shape[:2]
  return jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))


def _conv_valid_impl(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=_DIMENSIONS)


def _shifted_sum(x, kernel):
  """'VALID' depthwise conv as the sum over taps of the shifted window times the tap.
  Written in ``lax`` ops (slice, broadcast, multiply, add per tap): a quarter fewer HLO ops
  than ``jnp`` indexing emits, and compile time follows the op count."""
  kh, kw, channels = kernel.shape
  batch, h, w, _ = x.shape
  out_shape = (batch, h - kh + 1, w - kw + 1, channels)
  total = None
  for i in range(kh):
    for j in range(kw):
      window = lax.slice(x, (0, i, j, 0), (batch, i + out_shape[1], j + out_shape[2], channels))
      tap = lax.broadcast_in_dim(
        lax.slice(kernel, (i, j, 0), (i + 1, j + 1, channels)), out_shape, (1, 2, 3)
      )
      term = lax.mul(window, tap)
      total = term if total is None else lax.add(total, term)
  return total


def _kernel_grad_impl(x, g):
  b, h, w, c = x.shape
  lhs = x.transpose(1, 2, 3, 0).reshape(1, h, w, c * b)
  y = lax.conv_general_dilated(
    lhs,
    g.transpose(1, 2, 0, 3),
    (1, 1),
    'VALID',
    dimension_numbers=_DIMENSIONS,
    feature_group_count=c,
  )
  return y[0]


def _bilinear_primitive(name, impl):
  """A primitive computing ``impl(x, y)``, bilinear in (x, y): its JVP is two calls of
  itself and its transpose rules are set below, so no derivative ever reaches ``impl``'s
  own (slow) autodiff, in forward or reverse mode."""
  primitive = Primitive(name)
  primitive.def_impl(impl)

  def abstract_eval(x, y):
    out = jax.eval_shape(
      impl, jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(y.shape, y.dtype)
    )
    return ShapedArray(out.shape, out.dtype)

  primitive.def_abstract_eval(abstract_eval)
  mlir.register_lowering(primitive, mlir.lower_fun(impl, multiple_results=False))
  batching.primitive_batchers[primitive] = lambda args, dims: (
    jax.vmap(impl, in_axes=dims)(*args),
    0,
  )
  return primitive


_valid_conv_p = _bilinear_primitive('skillearn_valid_conv', _conv_valid_impl)
_depthwise_valid_p = _bilinear_primitive('skillearn_depthwise_valid', _shifted_sum)
_depthwise_kernel_grad_p = _bilinear_primitive('skillearn_depthwise_kernel_grad', _kernel_grad_impl)


def _valid_conv(x, kernel):
  """Dense stride-1 'VALID' conv."""
  return _valid_conv_p.bind(x, kernel)


def _depthwise_valid(x, kernel):
  """Stride-1 'VALID' depthwise conv of ``x`` (B, H, W, C) with ``kernel`` (kh, kw, C)."""
  return _depthwise_valid_p.bind(x, kernel)


def _depthwise_kernel_grad(x, g):
  """``sum_b x[b, i:i+H', j:j+W', c] * g[b, :, :, c]`` for every tap (i, j): (kh, kw, C).
  One grouped conv, group c reading the batch of channel c as its input features."""
  return _depthwise_kernel_grad_p.bind(x, g)


def _depthwise_full(g, kernel):
  """The transpose of ``_depthwise_valid`` in its input: a 'FULL' conv, flipped kernel."""
  return _depthwise_valid(_pad_full(g, kernel), kernel[::-1, ::-1])


ad.defbilinear(
  _valid_conv_p,
  lambda g, x, kernel: _valid_conv(_pad_full(g, kernel), kernel[::-1, ::-1].transpose(0, 1, 3, 2)),
  # the kernel gradient as a conv over the batch: N <- input channels, C <- batch
  lambda g, x, kernel: _valid_conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3)).transpose(
    1, 2, 0, 3
  ),
)
ad.defbilinear(
  _depthwise_valid_p,
  lambda g, x, kernel: _depthwise_full(g, kernel),
  lambda g, x, kernel: _depthwise_kernel_grad(x, g),
)
ad.defbilinear(
  _depthwise_kernel_grad_p,
  lambda u, x, g: _depthwise_full(g, u),
  lambda u, x, g: _depthwise_valid(x, u),
)


def _valid(x, kernel, groups: int):
  """Stride-1 'VALID' conv, dense (``groups`` 1) or depthwise (``kernel`` (kh, kw, 1, C))."""
  return _valid_conv(x, kernel) if groups == 1 else _depthwise_valid(x, kernel[:, :, 0, :])


def _strided(x, kernel, groups: int, stride: int):
  """'VALID' conv of an already padded ``x`` at ``stride``, as stride-1 convs of its polyphase
  components."""
  if stride == 1:
    return _valid(x, kernel, groups)
  kh, kw = kernel.shape[:2]
  out_h = (x.shape[1] - kh) // stride + 1
  out_w = (x.shape[2] - kw) // stride + 1
  total = None
  for p in range(min(stride, kh)):
    for q in range(min(stride, kw)):
      phase = x[:, p::stride, q::stride, :]
      y = _valid(phase, kernel[p::stride, q::stride], groups)[:, :out_h, :out_w, :]
      total = y if total is None else total + y
  return total


def _dilate_kernel(kernel, dilation: int):
  kh, kw = kernel.shape[:2]
  dilated = jnp.zeros(
    ((kh - 1) * dilation + 1, (kw - 1) * dilation + 1) + kernel.shape[2:], kernel.dtype
  )
  return dilated.at[::dilation, ::dilation].set(kernel)


def conv2d(x, kernel, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1):
  """``lax.conv_general_dilated(x, kernel, (stride,) * 2, ((padding, padding),) * 2,
  rhs_dilation=(dilation,) * 2, feature_group_count=groups)`` for NHWC ``x`` and HWIO
  ``kernel``, with ``groups`` 1 or the channel count; see the module docstring for how."""
  channels = x.shape[-1]
  if groups not in (1, channels) or (groups > 1 and kernel.shape[2:] != (1, channels)):
    raise ValueError(
      f'conv2d: groups must be 1 or the channel count ({channels}) with a '
      f'(k, k, 1, {channels}) kernel, got groups={groups}, kernel '
      f'{tuple(kernel.shape)}'
    )
  if min(stride, dilation) < 1 or padding < 0:
    raise ValueError(
      f'conv2d: stride and dilation must be >= 1 and padding >= 0, got '
      f'stride={stride}, dilation={dilation}, padding={padding}'
    )
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  if kernel.shape[:2] == (1, 1):
    y = x[:, ::stride, ::stride, :]
    return y * kernel[0, 0, 0] if groups > 1 else jnp.einsum('bhwc,cd->bhwd', y, kernel[0, 0])
  n, h, w, _ = x.shape
  if dilation == 2 and stride in (1, 2) and h % 2 == 0 and w % 2 == 0:
    # the output of a dilation-2 conv reads one 2x2 polyphase component per output phase
    if stride == 2:
      return _valid(x[:, ::2, ::2, :], kernel, groups)
    phases = x.reshape(n, h // 2, 2, w // 2, 2, channels).transpose(2, 4, 0, 1, 3, 5)
    y = _valid(phases.reshape(4 * n, h // 2, w // 2, channels), kernel, groups)
    oh, ow, features = y.shape[1:]
    y = y.reshape(2, 2, n, oh, ow, features).transpose(2, 3, 0, 4, 1, 5)
    return y.reshape(n, 2 * oh, 2 * ow, features)
  if dilation > 1:
    kernel = _dilate_kernel(kernel, dilation)
  return _strided(x, kernel, groups, stride)


# 'auto' resolves to one of the other two when a network is built or traced, so that modules,
# jit caches and the edge scan's lru_cache are keyed on the implementation that actually runs.
CONV_IMPLS = ('auto', 'cpu_fast', 'xla')


def resolve(impl: str) -> str:
  """The concrete implementation ('cpu_fast' or 'xla') that ``impl`` names: 'auto' is
  'cpu_fast' on the CPU backend and 'xla' on GPU/TPU (``jax.default_backend()``)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {impl!r}')
  if impl == 'auto':
    return 'cpu_fast' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def lax_conv2d(x, kernel, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1):
  """The 'xla' implementation of ``conv2d``: one ``lax.conv_general_dilated`` with JAX's own
  derivatives, which XLA:GPU hands to cuDNN (depthwise as ``feature_group_count`` groups)."""
  return lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    ((padding, padding), (padding, padding)),
    rhs_dilation=(dilation, dilation),
    dimension_numbers=_DIMENSIONS,
    feature_group_count=groups,
  )


def convolve(
  x,
  kernel,
  stride: int = 1,
  padding: int = 0,
  dilation: int = 1,
  groups: int = 1,
  *,
  impl: str = 'auto',
):
  """``conv2d``'s convolution (NHWC ``x``, HWIO ``kernel``, ``groups`` 1 or the channel count)
  run by implementation ``impl`` (see ``CONV_IMPLS``)."""
  if resolve(impl) == 'cpu_fast':
    return conv2d(x, kernel, stride, padding, dilation, groups)
  return lax_conv2d(x, kernel, stride, padding, dilation, groups)


def depthwise_conv(x, kernel, stride: int = 1, dilation: int = 1, *, impl: str = 'auto'):
  """Depthwise conv of NHWC ``x`` with ``kernel`` (k, k, 1, C), 'same' zero padding
  ``dilation * (k // 2)``, no bias, run by implementation ``impl``."""
  padding = dilation * (kernel.shape[0] // 2)
  return convolve(x, kernel, stride, padding, dilation, groups=x.shape[-1], impl=impl)
