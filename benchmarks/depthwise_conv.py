"""Depthwise conv implementations inside a scan: forward + backward, and second order.

  python benchmarks/depthwise_conv.py
  python benchmarks/depthwise_conv.py --shapes 64x32x32x16x5 --order 2

The DARTS supernet runs its depthwise convs inside the edge scan, so each
implementation is timed as a 4-step `lax.scan` of relu -> depthwise conv
('same' padding), differentiated once (order 1: value and gradient in input and
kernels) or twice (order 2: gradient of the squared kernel gradient, as an exact
hypergradient does). Implementations:
- shifted: `nas.conv.conv2d` (sums of shifted windows, the library's path);
- dense: a dense conv with a block-diagonal kernel through `conv2d`'s dense
  path (what the library ran before);
- grouped: `lax.conv_general_dilated` with `feature_group_count` = channels
  and JAX's own derivatives.
Prints one JSON line per shape and implementation (compile_s, median ms per
conv, max relative error against the first implementation) and a last line
with the ratios dense / shifted and grouped / shifted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skillearn_jax.run import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply_defaults()

import jax  # noqa: E402  (after the XLA flags)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from skillearn_jax.nas import conv  # noqa: E402

SCAN_STEPS = 4
IMPLEMENTATIONS = ('shifted', 'dense', 'grouped')


def _implementation(name: str):
  def shifted(x, kernel):
    return conv.conv2d(x, kernel, padding=kernel.shape[0] // 2, groups=x.shape[-1])

  def dense(x, kernel):
    block_diagonal = kernel[:, :, 0, :, None] * jnp.eye(x.shape[-1], dtype=x.dtype)
    return conv.conv2d(x, block_diagonal, padding=kernel.shape[0] // 2)

  def grouped(x, kernel):
    p = kernel.shape[0] // 2
    return lax.conv_general_dilated(
      x,
      kernel,
      (1, 1),
      ((p, p), (p, p)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1],
    )

  return {'shifted': shifted, 'dense': dense, 'grouped': grouped}[name]


def _step(conv_fn, target, order: int):
  def loss(x, kernels):
    def body(h, kernel):
      return conv_fn(jax.nn.relu(h), kernel), None

    return jnp.sum(lax.scan(body, x, kernels)[0] * target)

  if order == 1:
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  kernel_grad = jax.grad(loss, argnums=1)
  return jax.jit(jax.grad(lambda x, k: jnp.sum(kernel_grad(x, k) ** 2), argnums=(0, 1)))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--shapes',
    default='64x32x32x16x5,64x16x16x32x5,64x8x8x64x5,64x32x32x16x3',
    help='comma-separated BxHxWxCxK (batch, height, width, channels, kernel)',
  )
  parser.add_argument('--order', type=int, choices=(1, 2), default=1)
  parser.add_argument('--impls', default=','.join(IMPLEMENTATIONS))
  parser.add_argument('--iters', type=int, default=5)
  args = parser.parse_args(argv)
  impls = args.impls.split(',')
  unknown = sorted(set(impls) - set(IMPLEMENTATIONS))
  if unknown:
    parser.error(f'--impls: unknown {unknown}; allowed: {", ".join(IMPLEMENTATIONS)}')
  ratios = {}
  for shape in args.shapes.split(','):
    b, h, w, c, k = (int(v) for v in shape.split('x'))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
    kernels = jnp.asarray(0.2 * rng.normal(size=(SCAN_STEPS, k, k, 1, c)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
    reference, medians = None, {}
    for name in impls:
      start = time.perf_counter()
      compiled = _step(_implementation(name), target, args.order).lower(x, kernels).compile()
      compile_s = time.perf_counter() - start
      out = jax.block_until_ready(compiled(x, kernels))
      times = []
      for _ in range(args.iters):
        start = time.perf_counter()
        jax.block_until_ready(compiled(x, kernels))
        times.append(time.perf_counter() - start)
      reference = out if reference is None else reference
      error = max(
        float(jnp.max(jnp.abs(a - r)) / (jnp.max(jnp.abs(r)) + 1e-12))
        for a, r in zip(jax.tree.leaves(out), jax.tree.leaves(reference))
      )
      medians[name] = 1000 * statistics.median(times) / SCAN_STEPS
      print(
        json.dumps(
          {
            'impl': name,
            'shape': shape,
            'order': args.order,
            'compile_s': round(compile_s, 2),
            'median_ms_per_conv': round(medians[name], 2),
            'max_rel_error': error,
          }
        ),
        flush=True,
      )
    if 'shifted' in medians:
      for name, ms in medians.items():
        if name != 'shifted':
          ratios[f'{shape}/{name}_over_shifted'] = round(ms / medians['shifted'], 2)
  print(json.dumps({'impl': 'ratio', 'order': args.order, **ratios}), flush=True)


if __name__ == '__main__':
  main()
