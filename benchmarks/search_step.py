"""DARTS search-step speed and memory: JAX (our engine) against PyTorch.

  python benchmarks/search_step.py --batch 64 --layers 8 --channels 16 --iters 3
  python benchmarks/search_step.py --batch 16 --layers 5 --channels 16 --iters 5
  python benchmarks/search_step.py --precision bfloat16 --device cuda   # on a GPU

Prints one JSON line per measured configuration with keys impl (jax|torch),
order (1|2), method, space (`--space`: darts | pcdarts | darts_minus | pdarts, with k or
ops_per_edge), batch, layers, channels, compile_s, median_s, min_s,
max_s, peak_rss_mb, params_m, malloc (the heap allocator, `jemalloc` when
run under LD_PRELOAD as docs/performance.md shows), and for JAX
trace_s, lower_s and xla_s (the parts of compile_s, from
`run.compile_watch`) and xla_temp_mb (XLA's temporary
buffers for one step, from `memory_analysis()`: the step's own footprint,
where peak_rss_mb also holds the compiler and the tracer) and gradient_loop
(`--gradient_loop off` writes the second-order steps' gradients out
instead of sending them through one loop body) and exact_mode (`--exact_mode`,
how the exact and implicit rows take their second derivatives), precision
(`--precision`: float32 | bfloat16, the supernet's net.precision; the
reference runs its forward passes under torch.autocast(bfloat16) then),
backend and device_kind (where JAX ran) and, off the CPU, peak_device_mb
(the device's peak memory in use). JAX runs
first order, second order exact and second order finite difference (and
`implicit` or `implicit_cg`, on request with `--methods`); the PyTorch reference
(`--torch_ref`, default ../shared/bench/torch_darts_ref.py, needs
`pip install torch==2.13.0`) runs orders 1 and 2 with the same settings in the
same invocation, on `--device` (cpu | cuda). Each
configuration runs in its own process so peak RSS is its own. Batches are
synthetic CIFAR-shaped arrays generated up front, as the reference does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_REF = os.path.join(ROOT, '..', 'shared', 'bench', 'torch_darts_ref.py')
JAX_METHODS = (('first_order', 1), ('exact', 2), ('finite_difference', 2))
# Measured on request (`--methods implicit`): the reference has no such step,
# so its ratio is against the reference's finite-difference one.
OPT_IN_METHODS = (('implicit', 2), ('implicit_cg', 2))


def _jax_config(args):
  from configs import common  # pylint: disable=import-outside-toplevel

  c = common.program_config('darts')
  common.darts_search_blocks(c)
  c.data.batch_size = args.batch
  c.net.layers = args.layers
  c.net.channels = args.channels
  c.net.nodes = c.net.multiplier = args.nodes
  c.space = args.space
  c.pcdarts.k = args.k
  c.net.remat = args.remat == 'on'
  c.net.precision = args.precision
  if args.space == 'pdarts':
    c.pdarts.drop_rate = 0.1
    if args.ops_per_edge < 8:  # a later stage: the first N primitives on every edge
      row = [i < args.ops_per_edge for i in range(8)]
      c.pdarts.masks = json.dumps({cell: [row] * 14 for cell in ('normal', 'reduce')})
  return c


def run_jax(args, method: str, order: int) -> dict:
  """Measures one JAX configuration in this process."""
  from skillearn_jax.run import compile_watch  # pylint: disable=import-outside-toplevel
  from skillearn_jax.run import host_memory  # pylint: disable=import-outside-toplevel
  from skillearn_jax.run import xla_flags  # pylint: disable=import-outside-toplevel

  xla_flags.apply_defaults()  # as the CLI runs
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from skillearn_jax import core  # pylint: disable=import-outside-toplevel
  from skillearn_jax.run import compilation_cache  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import darts  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import nas_search  # pylint: disable=import-outside-toplevel

  if args.cache_dir:
    compilation_cache.enable(args.cache_dir)
  config = _jax_config(args)
  net = nas_search.make_supernet(config, 10)
  program, _ = darts.darts_program(net, config, steps_per_epoch=390)
  with host_memory.Releaser():  # as the runner builds its model
    weights, alphas, stats = nas_search.init_supernet(
      net, jax.random.PRNGKey(args.seed), (32, 32, 3)
    )
    state = core.init_state(
      program, {darts.WEIGHTS: weights, darts.ALPHAS: alphas}, {'batch_stats': stats}
    )
  params_m = sum(x.size for x in jax.tree_util.tree_leaves(weights)) / 1e6
  device = jax.devices()[0]
  rng = np.random.default_rng(0)
  pool = [
    {
      'image': rng.normal(size=(args.batch, 32, 32, 3)).astype(np.float32),
      'label': rng.integers(0, 10, args.batch).astype(np.int32),
    }
    for _ in range(4)
  ]
  batches = [{'train': pool[(2 * i) % 4], 'val': pool[(2 * i + 1) % 4]} for i in range(4)]
  step = core.make_step(
    program,
    method=method,
    donate=True,
    options=core.HypergradientOptions(exact_mode=args.exact_mode),
    gradient_loop=args.gradient_loop == 'on',
  )
  key = jax.random.PRNGKey(0)
  with host_memory.Releaser(), compile_watch.CompileWatch() as watch:
    compiled = step.lower(state, batches[0], key).compile()
  phases = watch.report()
  xla_temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
  times = []
  for it in range(args.warmup + args.iters):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batches[it % 4], jax.random.fold_in(key, it))
    jax.block_until_ready(metrics)
    if it >= args.warmup:
      times.append(time.perf_counter() - t0)
  return {
    'impl': 'jax',
    'order': order,
    'method': method,
    'gradient_loop': args.gradient_loop,
    **({'exact_mode': args.exact_mode} if method in ('exact', 'implicit', 'implicit_cg') else {}),
    'space': args.space,
    **({'k': args.k} if args.space == 'pcdarts' else {}),
    **({'ops_per_edge': args.ops_per_edge} if args.space == 'pdarts' else {}),
    **({'remat': 'off'} if args.remat == 'off' else {}),
    'precision': args.precision,
    'backend': jax.default_backend(),
    'device_kind': device.device_kind,
    'batch': args.batch,
    'layers': args.layers,
    'channels': args.channels,
    **({'nodes': args.nodes} if args.nodes != 4 else {}),
    'compile_s': round(phases.wall_s, 3),
    'trace_s': round(phases.trace_s, 3),
    'lower_s': round(phases.lower_s, 3),
    'xla_s': round(phases.xla_s, 3),
    'median_s': round(statistics.median(times), 4),
    'min_s': round(min(times), 4),
    'max_s': round(max(times), 4),
    'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    'xla_temp_mb': round(xla_temp_mb, 1),
    **_device_peak(device),
    'params_m': round(params_m, 6),
    'malloc': host_memory.allocator(),
  }


def _device_peak(device) -> dict:
  """{'peak_device_mb'} off the CPU (the allocator's peak bytes in use), else nothing."""
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if not stats or 'peak_bytes_in_use' not in stats:
    return {}
  return {'peak_device_mb': round(stats['peak_bytes_in_use'] / 2**20, 1)}


def run_torch(args, order: int) -> dict | None:
  if not os.path.exists(args.torch_ref):
    print(f'# reference not found at {args.torch_ref}', file=sys.stderr)
    return None
  cmd = [
    sys.executable,
    args.torch_ref,
    '--order',
    str(order),
    '--batch',
    str(args.batch),
    '--layers',
    str(args.layers),
    '--channels',
    str(args.channels),
    '--iters',
    str(args.iters),
    '--warmup',
    str(args.warmup),
    '--device',
    args.device,
    *(['--bf16'] if args.precision == 'bfloat16' else []),
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode:
    print(
      f'# torch reference failed (is torch==2.13.0 installed?):\n{proc.stderr[-2000:]}',
      file=sys.stderr,
    )
    return None
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  from skillearn_jax.run import host_memory  # pylint: disable=import-outside-toplevel

  row.update(
    {
      'impl': 'torch',
      'method': 'finite_difference' if order == 2 else 'first_order',
      'precision': args.precision,
      'channels': args.channels,
      'compile_s': 0.0,
      # the reference inherits this process's environment, LD_PRELOAD too
      'malloc': host_memory.allocator(),
    }
  )
  return row


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--layers', type=int, default=8)
  ap.add_argument('--channels', type=int, default=16)
  ap.add_argument('--nodes', type=int, default=4, help='JAX only (the reference has 4): smoke runs')
  ap.add_argument('--iters', type=int, default=3)
  ap.add_argument('--warmup', type=int, default=1)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--space', default='darts', choices=('darts', 'pcdarts', 'darts_minus', 'pdarts'))
  ap.add_argument('--k', type=int, default=4, help='PC-DARTS partial channels')
  ap.add_argument(
    '--remat',
    choices=('on', 'off'),
    default='on',
    help='Recompute each mixed op in the backward pass (net.remat, the default) or keep its '
    'intermediates, as the PyTorch codes do.',
  )
  ap.add_argument('--ops_per_edge', type=int, default=8, help='P-DARTS: ops on per edge (8, 5, 3)')
  ap.add_argument('--impl', choices=('both', 'jax', 'torch'), default='both')
  ap.add_argument(
    '--precision',
    choices=('float32', 'bfloat16'),
    default='float32',
    help="The supernet's net.precision; the reference gets --bf16 (autocast) at bfloat16.",
  )
  ap.add_argument(
    '--device',
    choices=('cpu', 'cuda'),
    default='cpu',
    help="The reference's device (JAX runs on its default backend; JAX_PLATFORMS picks it).",
  )
  ap.add_argument('--torch_ref', default=TORCH_REF, help='Path of the PyTorch reference script.')
  ap.add_argument(
    '--methods',
    default=','.join(m for m, _ in JAX_METHODS),
    help='JAX methods to measure, comma separated.',
  )
  ap.add_argument(
    '--cache_dir',
    default='',
    help='Persistent compilation cache (empty: off, so compile_s is a cold compile).',
  )
  ap.add_argument(
    '--gradient_loop',
    choices=('on', 'off'),
    default='on',
    help='Second order (finite difference, exact forward over '
    'reverse) through one gradient loop body '
    '(core.gradient_loop, the default) or written out.',
  )
  from skillearn_jax.core import hypergradients  # pylint: disable=import-outside-toplevel

  ap.add_argument(
    '--exact_mode',
    default='forward_over_reverse',
    choices=hypergradients.EXACT_MODES,
    help='How the exact and implicit rows take their second '
    'derivatives (core.HypergradientOptions.exact_mode).',
  )
  ap.add_argument('--only', default='', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  known = dict(JAX_METHODS + OPT_IN_METHODS)
  if args.only:  # child process: one JAX configuration
    method = args.only
    print(json.dumps(run_jax(args, method, known[method])), flush=True)
    return
  forwarded = [
    a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith('--only')
  ]
  rows = []
  if args.impl in ('both', 'jax'):
    for method in args.methods.split(','):
      if method not in known:
        raise SystemExit(f'--methods: unknown {method!r}; allowed: {list(known)}')
      proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *forwarded, f'--only={method}'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, 'PYTHONPATH': ROOT},
      )
      if proc.returncode:
        print(f'# jax {method} failed:\n{proc.stderr[-3000:]}', file=sys.stderr)
        continue
      line = proc.stdout.strip().splitlines()[-1]
      rows.append(json.loads(line))
      print(line, flush=True)
  if args.impl in ('both', 'torch'):
    for order in (1, 2):
      row = run_torch(args, order)
      if row:
        rows.append(row)
        print(json.dumps(row), flush=True)
  ratios = ratios_to_reference(rows)
  if ratios:
    print(
      json.dumps(
        {
          'impl': 'ratio',
          'precision': args.precision,
          'batch': args.batch,
          'layers': args.layers,
          'channels': args.channels,
          **ratios,
        }
      ),
      flush=True,
    )


def ratios_to_reference(rows) -> dict:
  """JAX median step time and peak RSS over the reference's of the same order,
  keyed by JAX method (empty when either side is missing)."""
  torch = {r['order']: r for r in rows if r['impl'] == 'torch'}
  out = {}
  for r in rows:
    ref = torch.get(r['order'])
    if r['impl'] == 'jax' and ref:
      out[f"{r['method']}_time_ratio"] = round(r['median_s'] / ref['median_s'], 3)
      out[f"{r['method']}_rss_ratio"] = round(r['peak_rss_mb'] / ref['peak_rss_mb'], 3)
  return out


if __name__ == '__main__':
  sys.path.insert(0, ROOT)
  main()
