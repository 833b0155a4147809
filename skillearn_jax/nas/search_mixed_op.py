"""The DARTS search mixed op, fused for XLA:CPU: all primitives of one edge in few ops.

This module owns ``MixedOp``: ``sum_o softmax(alpha)_o * op_o(x)`` over the search primitives
(pooling followed by affine-free batch norm, every batch norm affine-free), written so that an
edge lowers to few, cheap-to-compile ops instead of one sub-program per primitive:
- depthwise convs go through ``ops.depthwise_conv`` with the op's ``conv_impl`` (on CPU sums
  of shifted windows, dilation 2 on polyphase components; on GPU/TPU grouped ``lax``
  convolutions; see ``conv``);
- the pointwise convs of the ops at one stage are one batched contraction (on every backend: a
  1x1 conv is a matmul) and their batch norms one normalisation (sep/dil first stages together, sep second stages together);
- max/avg pooling are max/sum over the 3 rows, then the 3 columns, of each window (no
  select-and-scatter backward);
- optional gradient gates (``grad_gates``, traced booleans ``{'weights', 'alphas'}``) skip the
  kernel gradients of the convs and the gradient of the mixing weights at run time when a
  caller will discard them, so one compiled backward pass serves both a weight gradient and
  an architecture gradient (see ``core.gradient_loop``).
Variables mirror ``ops.make_op``'s exactly (paths, names, shapes), so a plain per-primitive
formulation runs on the same variables and the parameter count equals the reference.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from skillearn_jax.nas import conv, ops

CONV_PRIMITIVES = ('sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5')
POOL_PRIMITIVES = ('max_pool_3x3', 'avg_pool_3x3')


def _kernel_geometry(name: str) -> tuple[int, int]:
  """(kernel size, dilation) of a conv primitive."""
  return int(name[-1]), (1 if name.startswith('sep') else 2)


def gated(fn: Callable, x, params, gate):
  """``fn(x, params)`` whose gradient w.r.t. ``params`` is computed only where the traced
  boolean ``gate`` holds (zeros otherwise); ``gate`` None is ``fn`` itself. The gradient
  w.r.t. ``x`` is always computed. The skipped work sits in a ``lax.cond`` branch, so a
  program that evaluates this backward pass with the gate on and off compiles it once."""
  if gate is None:
    return fn(x, params)
  return _gated(fn, x, params, jnp.asarray(gate, bool))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gated(fn, x, params, gate):
  del gate
  return fn(x, params)


def _gated_forward(fn, x, params, gate):
  return fn(x, params), (x, params, gate)


def _gated_backward(fn, residuals, cotangent):
  x, params, gate = residuals
  _, vjp_x = jax.vjp(lambda x: fn(x, params), x)
  (d_x,) = vjp_x(cotangent)

  def params_grad():
    _, vjp_params = jax.vjp(lambda p: fn(x, p), params)
    return vjp_params(cotangent)[0]

  d_params = lax.cond(gate, params_grad, lambda: jax.tree_util.tree_map(jnp.zeros_like, params))
  return d_x, d_params, None


_gated.defvjp(_gated_forward, _gated_backward)


def _mix(outputs, weights, *, indices, zeros_shape):
  """``sum_o weights[o] * outputs[o]`` over the non-zero ops (``indices``: their positions
  in ``weights``), from exact zeros, in primitive order. Bfloat16 outputs are weighed by the
  float32 weights in float32 (one fused elementwise loop) and the sum cast back, so the
  weights' gradient is reduced in float32."""
  total = jnp.zeros(zeros_shape, outputs[0].dtype)
  for o, y in zip(indices, outputs):
    total = total + weights[o] * y
  return total.astype(outputs[0].dtype)


def _pool_3x3(x, stride: int, pad_value: float, combine):
  """``combine`` (max or add) over each output pixel's 3x3 window (padding 1 with
  ``pad_value``, windows ``stride`` apart), separably: the 3 rows, then the 3 columns, which
  halves the ops against combining the 9 shifted windows, forward and backward."""
  for axis in (1, 2):
    size = x.shape[axis]
    out = (size - 1) // stride + 1
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 1)
    padded = jnp.pad(x, pad, constant_values=pad_value)
    taps = [lax.slice_in_dim(padded, d, d + stride * (out - 1) + 1, stride, axis) for d in range(3)]
    x = combine(combine(taps[0], taps[1]), taps[2])
  return x


def depthwise_group(x, kernels, stride: int, conv_impl: str = 'auto'):
  """Depthwise convs of several ops: ``x`` (B, H, W, C) read by every op, or (O, B, H, W, C)
  with one slice per op; ``kernels``: O pairs ``(kernel (k, k, 1, C), dilation)``.
  Returns (O, B, H', W', C): the op axis leads, so the pointwise contraction batches over it
  and the batch-norm reductions run without transposes."""
  return jnp.stack(
    [
      ops.depthwise_conv(x if x.ndim == 4 else x[o], kernel, stride, d, conv_impl)
      for o, (kernel, d) in enumerate(kernels)
    ]
  )


def pointwise_group(x, kernels):
  """1x1 convs, one per op slice: (O, B, H, W, C) with O kernels (1, 1, C, D)."""
  weights = jnp.stack([k[0, 0] for k in kernels])
  return jnp.einsum('obhwc,ocd->obhwd', x, weights)


def pools(x, stride: int, names: Sequence[str]):
  """The 3x3 pools ``names`` (max and/or avg; padding 1, padding excluded from the
  average) of ``x``, stacked as (len(names), B, H', W', C)."""
  results = []
  for name in names:
    if name == 'max_pool_3x3':
      results.append(_pool_3x3(x, stride, -jnp.inf, jnp.maximum))
    else:
      total = _pool_3x3(x, stride, 0.0, jnp.add)
      out_h, out_w = total.shape[1:3]
      counts = _valid_counts(x.shape[1:3], stride, out_h, out_w)
      results.append(total / counts.astype(total.dtype))
  return jnp.stack(results)


def _valid_counts(hw, stride: int, out_h: int, out_w: int):
  """Number of in-image cells of each output's 3x3 window (padding 1)."""

  def per_axis(size, out):
    centers = np.arange(out) * stride
    return np.minimum(centers + 1, size - 1) - np.maximum(centers - 1, 0) + 1

  counts = np.outer(per_axis(hw[0], out_h), per_axis(hw[1], out_w)).astype(np.float32)
  return jnp.asarray(counts)[None, :, :, None]


def dropout(x, rate, key):
  """Inverted dropout at a traced `rate` (torch's nn.Dropout in training mode)."""
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.maximum(1.0 - rate, 1e-6), 0.0).astype(x.dtype)


class MixedOp(nn.Module):
  """Softmax-weighted sum of ``primitives`` on one edge; ``weights``: (len(primitives),)."""

  channels: int
  stride: int
  primitives: Sequence[str] = ops.PRIMITIVES
  conv_impl: str = 'auto'  # of the depthwise convs and the strided skip's FactorizedReduce

  def _scope(self, path: str):
    scope = self.scope
    for name in path.split('/'):
      scope = scope.push(name, reuse=True)
    return scope

  def _kernel(self, path: str, shape, x):
    """The float32 kernel at ``path``, cast to ``x``'s precision (``ops.at_precision``)."""
    return ops.at_precision(self._scope(path).param('kernel', ops.TORCH_DEFAULT_INIT, shape), x)

  def _batch_norm(self, x, paths: Sequence[str], train: bool):
    """Affine-free batch norm of each op slice of (O, B, H, W, C), with the running
    statistics of slice o kept at ``paths[o]`` (as ``ops.batch_norm`` keeps them)."""
    c = x.shape[-1]
    stats = [
      (
        self._scope(p).variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32),
        self._scope(p).variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32),
      )
      for p in paths
    ]
    if train:
      # reduced in float32 whatever the activations' precision (a no-op at float32)
      xs = x.astype(jnp.float32) if ops.low_precision(x) else x
      mean = jnp.mean(xs, axis=(1, 2, 3))
      var = jnp.maximum(0.0, jnp.mean(xs * xs, axis=(1, 2, 3)) - mean * mean)
      if not self.is_initializing():
        m = ops.BN_MOMENTUM
        for o, (ra_mean, ra_var) in enumerate(stats):
          ra_mean.value = m * ra_mean.value + (1 - m) * mean[o]
          ra_var.value = m * ra_var.value + (1 - m) * var[o]
    else:
      mean = jnp.stack([s[0].value for s in stats])
      var = jnp.stack([s[1].value for s in stats])
    mean, var = mean[:, None, None, None], var[:, None, None, None]
    return ((x - mean) * lax.rsqrt(var + ops.BN_EPSILON)).astype(x.dtype)

  @nn.compact
  def __call__(self, x, weights, train: bool, grad_gates=None, skip_drop=None):
    # train positional: static under nn.remat. grad_gates: None, or traced booleans
    # {'weights': compute kernel gradients, 'alphas': compute the mixing weights' gradient}.
    # skip_drop: None, or (rate, key) of P-DARTS' dropout after the identity skip-connect.
    c, s = self.channels, self.stride
    if x.shape[-1] != c:
      raise ValueError(f'MixedOp: input has {x.shape[-1]} channels, channels={c}')
    conv_impl = conv.resolve(self.conv_impl)
    kernel_gate = None if grad_gates is None else grad_gates['weights']
    alpha_gate = None if grad_gates is None else grad_gates['alphas']

    def depthwise(x, kernels, stride):
      dilations = [d for _, d in kernels]
      return gated(
        lambda x, ks: depthwise_group(x, list(zip(ks, dilations)), stride, conv_impl),
        x,
        [k for k, _ in kernels],
        kernel_gate,
      )

    def pointwise(y, kernels):
      return gated(pointwise_group, y, kernels, kernel_gate)

    outputs = {}  # primitive name -> (B, H', W', C); 'none' contributes exact zeros
    pool_names = [p for p in POOL_PRIMITIVES if p in self.primitives]
    if pool_names:
      pooled = self._batch_norm(pools(x, s, pool_names), [f'{p}_bn' for p in pool_names], train)
      outputs.update({p: pooled[i] for i, p in enumerate(pool_names)})
    if 'skip_connect' in self.primitives:
      outputs['skip_connect'] = (
        x
        if s == 1
        else ops.FactorizedReduce(c, False, conv_impl, name='skip_connect')(x, train=train)
      )
      if skip_drop is not None and s == 1 and train:
        outputs['skip_connect'] = dropout(x, *skip_drop)
    convs = [p for p in CONV_PRIMITIVES if p in self.primitives]
    if convs:
      first = [f'{p}/block1' if p.startswith('sep') else p for p in convs]
      kernels = [
        (self._kernel(f'{path}/depthwise', (k, k, 1, c), x), d)
        for path, (k, d) in zip(first, map(_kernel_geometry, convs))
      ]
      y = depthwise(nn.relu(x), kernels, s)
      y = pointwise(y, [self._kernel(f'{p}/pointwise', (1, 1, c, c), x) for p in first])
      y = self._batch_norm(y, [f'{p}/bn' for p in first], train)
      # CONV_PRIMITIVES lists the sep convs first, so they are a leading slice
      seps = [p for p in convs if p.startswith('sep')]
      outputs.update({p: y[i] for i, p in enumerate(convs) if p not in seps})
      if seps:
        second = [f'{p}/block2' for p in seps]
        kernels = [
          (self._kernel(f'{path}/depthwise', (k, k, 1, c), x), 1)
          for path, (k, _) in zip(second, map(_kernel_geometry, seps))
        ]
        z = depthwise(nn.relu(y[: len(seps)]), kernels, 1)
        z = pointwise(z, [self._kernel(f'{p}/pointwise', (1, 1, c, c), x) for p in second])
        z = self._batch_norm(z, [f'{p}/bn' for p in second], train)
        outputs.update({p: z[i] for i, p in enumerate(seps)})
    present = [i for i, name in enumerate(self.primitives) if name in outputs]
    zeros_shape = x[:, ::s, ::s, :].shape
    if not present:
      return jnp.zeros(zeros_shape, x.dtype)
    mix = functools.partial(_mix, indices=present, zeros_shape=zeros_shape)
    return gated(mix, [outputs[self.primitives[i]] for i in present], weights, alpha_gate)
