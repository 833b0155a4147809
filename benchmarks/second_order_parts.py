"""The pieces of a DARTS second-order step, each compiled and timed alone.

  python benchmarks/second_order_parts.py --batch 16 --layers 5 --channels 16

Where `search_step.py` times whole steps, this benchmark takes one supernet
loss L(w, alpha) on one batch and measures, each in its own process (so peak
RSS is its own):
- `gradient`: value and gradient w.r.t. weights and alphas, nothing gated
  (what a first-order step and the exact step's forward pieces cost);
- `fd_pair`: the alphas' gradients at w + r*v and w - r*v in one `lax.map`,
  the weights' gradients gated off: the finite-difference step's share of
  the mixed second derivative;
- `mixed_reverse`: d/dalpha <grad_w L(w, alpha), v> by reverse over reverse
  (`jax.vjp` of the weights' gradient), the exact step's share;
- `mixed_forward`: the same product by forward over reverse (`jax.jvp` of
  the gradient w.r.t. weights and alphas along v, as the exact step's
  default `exact_mode` takes it). Forward mode fails on a `custom_vjp` left
  in a backward pass (as the convolutions of `nas/conv.py` were before
  docs/performance.md item 22); the row then reports the error.
Each row (one JSON line) has trace_s, lower_s, xla_s, median_s (of --iters
runs after one warm-up), xla_temp_mb (`memory_analysis()`), peak_rss_mb and
kernels: the distinct kernels XLA:CPU compiled for that program (identical
fused kernels are compiled once and reused; counted from XLA's own log).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ('gradient', 'fd_pair', 'mixed_reverse', 'mixed_forward')
COMPILE_MARK = '### compiling the measured program'
# XLA:CPU logs one line per kernel module it compiles (VLOG 1 of ir_compiler)
KERNEL_LOG = re.compile(r'ir_compiler\.cc:\d+\] Compiled LLVM module')


def run_part(args, part: str) -> dict:
  """Measures one part in this process: one JSON-able row."""
  from skillearn_jax.run import xla_flags  # pylint: disable=import-outside-toplevel

  xla_flags.apply_defaults()  # as the CLI runs
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.flatten_util import ravel_pytree  # pylint: disable=import-outside-toplevel
  from configs import common  # pylint: disable=import-outside-toplevel
  from skillearn_jax.core import program as prog  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import nas_search  # pylint: disable=import-outside-toplevel

  config = common.program_config('darts')
  common.darts_search_blocks(config)
  config.net.layers, config.net.channels = args.layers, args.channels
  net = nas_search.make_supernet(config, 10)
  weights, alphas, stats = nas_search.init_supernet(net, jax.random.PRNGKey(args.seed), (32, 32, 3))
  loss = nas_search.classification_loss(
    net, weights='weights', alphas='alphas', stats='batch_stats'
  )
  rng = np.random.default_rng(args.seed)
  batch = {
    'image': rng.normal(size=(args.batch, 32, 32, 3)).astype(np.float32),
    'label': rng.integers(0, 10, args.batch).astype(np.int32),
  }
  flat_w, unravel = ravel_pytree(weights)
  # a unit direction, so --fd_radius 0.01 is DARTS' r = 0.01 / ||v||
  v = rng.normal(size=flat_w.shape)
  direction = unravel(jnp.asarray(v / np.linalg.norm(v), jnp.float32))
  on, off = jnp.asarray(True), jnp.asarray(False)

  def objective(w, a, needs_grad):
    ctx = prog.LossContext(
      jax.random.PRNGKey(1), {'batch_stats': stats}, jnp.asarray(0), needs_grad
    )
    return loss({'weights': w, 'alphas': a}, batch, ctx).value

  def alphas_grad(w, a):
    return jax.grad(objective, argnums=1)(w, a, {'weights': off, 'alphas': on})

  def weights_grad(w, a):
    return jax.grad(objective, argnums=0)(w, a, {'weights': on, 'alphas': off})

  def shifted(w, v, s):
    return jax.tree.map(lambda x, y: x + s * y, w, v)

  programs = {
    'gradient': lambda w, a, v: jax.value_and_grad(objective, argnums=(0, 1))(w, a, None),
    'fd_pair': lambda w, a, v: jax.tree.map(
      lambda g: (g[0] - g[1]) / (2 * args.fd_radius),
      jax.lax.map(
        lambda s: alphas_grad(shifted(w, v, s), a), jnp.asarray([args.fd_radius, -args.fd_radius])
      ),
    ),
    'mixed_reverse': lambda w, a, v: jax.vjp(lambda a: weights_grad(w, a), a)[1](v)[0],
    'mixed_forward': lambda w, a, v: jax.jvp(
      lambda w: jax.grad(objective, argnums=(0, 1))(w, a, None), (w,), (v,)
    )[1][1],
  }
  inputs = (weights, alphas, direction)
  sys.stderr.write(COMPILE_MARK + '\n')
  sys.stderr.flush()
  row = {'part': part, 'batch': args.batch, 'layers': args.layers, 'channels': args.channels}
  t0 = time.perf_counter()
  try:  # forward mode through a custom_vjp fails in the trace or the lowering
    traced = jax.jit(programs[part]).trace(*inputs)
    t1 = time.perf_counter()
    lowered = traced.lower()
  except TypeError as e:
    return {**row, 'error': str(e).splitlines()[0]}
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  jax.block_until_ready(compiled(*inputs))
  times = []
  for _ in range(args.iters):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*inputs))
    times.append(time.perf_counter() - start)
  return {
    **row,
    'trace_s': round(t1 - t0, 2),
    'lower_s': round(t2 - t1, 2),
    'xla_s': round(t3 - t2, 2),
    'median_s': round(statistics.median(times), 4),
    'xla_temp_mb': round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1),
    'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
  }


def count_kernels(stderr: str) -> int:
  """Kernel modules XLA compiled after the compile mark."""
  _, _, after = stderr.partition(COMPILE_MARK)
  return len(KERNEL_LOG.findall(after))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batch', type=int, default=16)
  ap.add_argument('--layers', type=int, default=5)
  ap.add_argument('--channels', type=int, default=16)
  ap.add_argument('--iters', type=int, default=3)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument(
    '--fd_radius',
    type=float,
    default=1e-2,
    help="fd_pair's radius along the unit direction (DARTS: 0.01).",
  )
  ap.add_argument('--parts', default=','.join(PARTS), help=f'Comma-separated subset of {PARTS}.')
  ap.add_argument('--only', default='', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.only:  # child process: one part
    print(json.dumps(run_part(args, args.only)), flush=True)
    return
  parts = args.parts.split(',')
  unknown = [p for p in parts if p not in PARTS]
  if unknown:
    raise SystemExit(f'--parts: unknown {unknown}; allowed: {list(PARTS)}')
  forwarded = [
    f'--{name}={getattr(args, name)}'
    for name in ('batch', 'layers', 'channels', 'iters', 'seed', 'fd_radius')
  ]
  env = {
    **os.environ,
    'PYTHONPATH': ROOT,
    'TF_CPP_MIN_LOG_LEVEL': '0',
    'TF_CPP_VMODULE': 'ir_compiler=1',
  }
  for part in parts:
    proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), *forwarded, f'--only={part}'],
      capture_output=True,
      text=True,
      cwd=ROOT,
      env=env,
    )
    if proc.returncode:
      print(f'# {part} failed:\n{proc.stderr[-3000:]}', file=sys.stderr)
      continue
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if 'error' not in row:
      row['kernels'] = count_kernels(proc.stderr)
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  sys.path.insert(0, ROOT)
  main()
