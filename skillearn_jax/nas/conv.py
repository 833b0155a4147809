"""2-D convolutions (NHWC, HWIO) that stay on XLA:CPU's fast path at every derivative order.

This module owns ``conv2d``, the one convolution every network here uses. Its values equal
``lax.conv_general_dilated``'s up to float rounding; what differs is the program XLA sees:
- every convolution XLA runs is a stride-1, undilated, 'VALID' conv with canonical
  NHWC/HWIO/NHWC layout. XLA:CPU hands those to its Eigen kernels, while the weight-gradient
  convs JAX's own transpose rule emits (``f01b_i01o->01bf``) are compiled as naive loops
  inside ``lax.scan`` bodies: 40x slower than the unrolled program on a 14-step scan of 5x5
  convs, and the reason a scanned supernet's backward pass took 60 s a step. So the VJP is
  written out (``_valid_conv``'s rule), in terms of ``_valid_conv`` itself, which keeps second
  derivatives (exact DARTS hypergradients) on the same path. Forward-mode autodiff is not
  supported (``jax.custom_vjp``); Hessian-vector products go reverse-over-reverse;
- stride s is the sum over the s x s polyphase components of the padded input of stride-1
  convs with the matching kernel phases; dilation 2 at even sizes is a stride-1 conv on the
  input's 2x2 polyphase components; other dilations dilate the kernel with zeros;
- 1x1 convs are a contraction (no window at all);
- a depthwise conv (``groups`` = channels) with at most ``DENSE_DEPTHWISE_MAX_CHANNELS``
  channels runs as a dense conv with a block-diagonal kernel, because XLA:CPU's grouped conv
  is slow; wider ones stay grouped, their kernel gradient a sum of shifted products.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')

# Batch 64, 5x5, forward + backward alone: grouped 232 ms vs dense 43 ms at 32x32x16, 52 vs
# 25 ms at 16x16x32, 28 vs 36 ms at 8x8x64. Inside the supernet's scanned backward pass the
# grouped input-gradient convs at 64 channels topped the profile; running them dense too left
# the pass time level (7.0 vs 7.1 s at batch 16 / 5 cells), so 64 is kept for the simpler graph.
DENSE_DEPTHWISE_MAX_CHANNELS = 64


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _valid_conv(x, kernel, groups: int):
    """Stride-1 'VALID' conv; ``groups`` is 1 (dense) or the channel count (depthwise)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=_DIMENSIONS,
                                    feature_group_count=groups)


def _valid_conv_forward(x, kernel, groups):
    return _valid_conv(x, kernel, groups), (x, kernel)


def _valid_conv_backward(groups, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    g_padded = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    flipped = kernel[::-1, ::-1]
    if groups == 1:
        d_x = _valid_conv(g_padded, flipped.transpose(0, 1, 3, 2), 1)
        # the kernel gradient as a conv over the batch: N <- input channels, C <- batch
        d_kernel = _valid_conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), 1)
        return d_x, d_kernel.transpose(1, 2, 0, 3)
    d_x = _valid_conv(g_padded, flipped, groups)
    out_h, out_w = g.shape[1:3]
    taps = [jnp.sum(x[:, i:i + out_h, j:j + out_w, :] * g, axis=(0, 1, 2))
            for i in range(kh) for j in range(kw)]
    return d_x, jnp.stack(taps).reshape(kernel.shape)


_valid_conv.defvjp(_valid_conv_forward, _valid_conv_backward)


def _strided(x, kernel, groups: int, stride: int):
    """'VALID' conv of an already padded ``x`` at ``stride``, as stride-1 convs of its polyphase
    components."""
    if stride == 1:
        return _valid_conv(x, kernel, groups)
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    total = None
    for p in range(min(stride, kh)):
        for q in range(min(stride, kw)):
            phase = x[:, p::stride, q::stride, :]
            y = _valid_conv(phase, kernel[p::stride, q::stride], groups)[:, :out_h, :out_w, :]
            total = y if total is None else total + y
    return total


def _dilate_kernel(kernel, dilation: int):
    kh, kw = kernel.shape[:2]
    dilated = jnp.zeros(((kh - 1) * dilation + 1, (kw - 1) * dilation + 1) + kernel.shape[2:],
                        kernel.dtype)
    return dilated.at[::dilation, ::dilation].set(kernel)


def conv2d(x, kernel, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1):
    """``lax.conv_general_dilated(x, kernel, (stride,) * 2, ((padding, padding),) * 2,
    rhs_dilation=(dilation,) * 2, feature_group_count=groups)`` for NHWC ``x`` and HWIO
    ``kernel``, with ``groups`` 1 or the channel count; see the module docstring for how."""
    channels = x.shape[-1]
    if groups not in (1, channels) or (groups > 1 and kernel.shape[2:] != (1, channels)):
        raise ValueError(f'conv2d: groups must be 1 or the channel count ({channels}) with a '
                         f'(k, k, 1, {channels}) kernel, got groups={groups}, kernel '
                         f'{tuple(kernel.shape)}')
    if min(stride, dilation) < 1 or padding < 0:
        raise ValueError(f'conv2d: stride and dilation must be >= 1 and padding >= 0, got '
                         f'stride={stride}, dilation={dilation}, padding={padding}')
    if groups > 1 and channels <= DENSE_DEPTHWISE_MAX_CHANNELS:
        kernel, groups = kernel[:, :, 0, :, None] * jnp.eye(channels, dtype=kernel.dtype), 1
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    if kernel.shape[:2] == (1, 1):
        y = x[:, ::stride, ::stride, :]
        return y * kernel[0, 0, 0] if groups > 1 else jnp.einsum('bhwc,cd->bhwd', y, kernel[0, 0])
    n, h, w, _ = x.shape
    if dilation == 2 and stride in (1, 2) and h % 2 == 0 and w % 2 == 0:
        # the output of a dilation-2 conv reads one 2x2 polyphase component per output phase
        if stride == 2:
            return _valid_conv(x[:, ::2, ::2, :], kernel, groups)
        phases = x.reshape(n, h // 2, 2, w // 2, 2, channels).transpose(2, 4, 0, 1, 3, 5)
        y = _valid_conv(phases.reshape(4 * n, h // 2, w // 2, channels), kernel, groups)
        oh, ow, features = y.shape[1:]
        y = y.reshape(2, 2, n, oh, ow, features).transpose(2, 3, 0, 4, 1, 5)
        return y.reshape(n, 2 * oh, 2 * ow, features)
    if dilation > 1:
        kernel = _dilate_kernel(kernel, dilation)
    return _strided(x, kernel, groups, stride)
