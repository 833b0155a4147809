"""Interleaving-learning search step against a DARTS step: speed and memory.

  python benchmarks/il_step.py --batch 16 --layers 5 --channels 8 --iters 3
  python benchmarks/il_step.py --batch 64 --layers 8 --channels 16 --rounds 2 --methods finite_difference

IL holds M x K copies of the supernet weights (one encoder and head per
round and learner) and runs M x K learning stages per step, where DARTS holds
one copy and runs one stage. For each method this prints one JSON line per
skill with keys skill (darts|il), method, batch, layers, channels, rounds,
tasks, compile_s (and its parts trace_s, lower_s, xla_s), median_s, min_s,
max_s, peak_rss_mb, params_m (weights held, millions), and for exact
exact_mode (`--exact_mode`). IL learns the tasks CIFAR-100 then CIFAR-10
(heads of 100 and 10 ways) and DARTS CIFAR-10, all on synthetic CIFAR-shaped batches made
up front. Each configuration runs in its own process so peak RSS is its own.
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
SKILLS = ('darts', 'il')
METHODS = ('first_order', 'finite_difference', 'exact')
IL_CLASSES = (100, 10)
DARTS_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
STEPS_PER_EPOCH = 390


def _config(args):
  from configs import il_darts  # pylint: disable=import-outside-toplevel

  c = il_darts.get_config()
  c.data.batch_size = args.batch
  c.net.layers = args.layers
  c.net.channels = args.channels
  c.il.rounds = args.rounds
  return c


def _batches(args, rng, classes_by_key):
  """Four step-batches cycling over a pool of synthetic batches per key."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  def batch(classes):
    return {
      'image': rng.normal(size=(args.batch, *IMAGE_SHAPE)).astype(np.float32),
      'label': rng.integers(0, classes, args.batch).astype(np.int32),
    }

  def one_step():
    out = {}
    for key, classes in classes_by_key.items():
      if isinstance(classes, dict):
        out[key] = {k: batch(c) for k, c in classes.items()}
      else:
        out[key] = batch(classes)
    return out

  return [one_step() for _ in range(4)]


def _program_and_state(args, skill: str, rng):
  import jax  # pylint: disable=import-outside-toplevel
  from skillearn_jax import core  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import darts  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import il  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import nas_search  # pylint: disable=import-outside-toplevel

  config = _config(args)
  key = jax.random.PRNGKey(args.seed)
  if skill == 'darts':
    net = nas_search.make_supernet(config, DARTS_CLASSES)
    program, _ = darts.darts_program(net, config, STEPS_PER_EPOCH)
    weights, alphas, stats = nas_search.init_supernet(net, key, IMAGE_SHAPE)
    params = {darts.WEIGHTS: weights, darts.ALPHAS: alphas}
    model_state = {'batch_stats': stats}
    batches = _batches(args, rng, {'train': DARTS_CLASSES, 'val': DARTS_CLASSES})
  else:
    labels = ('cifar100', 'cifar10')
    nets = [nas_search.make_supernet(config, c) for c in IL_CLASSES]
    program, _ = il.supernet_program(nets, labels, config, STEPS_PER_EPOCH)
    params, model_state = il.init_supernet_params(nets, labels, config.il.rounds, key, IMAGE_SHAPE)
    classes = dict(zip(labels, IL_CLASSES))
    batches = _batches(args, rng, {**{f'train/{l}': c for l, c in classes.items()}, 'val': classes})
  state = core.init_state(program, params, model_state)
  return program, state, batches


def run_one(args, skill: str, method: str) -> dict:
  """Measures one (skill, method) configuration in this process."""
  from skillearn_jax.run import compile_watch  # pylint: disable=import-outside-toplevel
  from skillearn_jax.run import host_memory  # pylint: disable=import-outside-toplevel
  from skillearn_jax.run import xla_flags  # pylint: disable=import-outside-toplevel

  xla_flags.apply_defaults()  # as the CLI runs
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from skillearn_jax import core  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import darts  # pylint: disable=import-outside-toplevel

  with host_memory.Releaser():  # as the runner builds its model
    program, state, batches = _program_and_state(args, skill, np.random.default_rng(0))
  weight_sets = [n for n in state.params if n != darts.ALPHAS]
  params_m = (
    sum(x.size for n in weight_sets for x in jax.tree_util.tree_leaves(state.params[n])) / 1e6
  )
  step = core.make_step(
    program,
    method=method,
    donate=True,
    options=core.HypergradientOptions(exact_mode=args.exact_mode),
  )
  key = jax.random.PRNGKey(0)
  with host_memory.Releaser(), compile_watch.CompileWatch() as watch:
    compiled = step.lower(state, batches[0], key).compile()
  phases = watch.report()
  times = []
  for it in range(args.warmup + args.iters):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batches[it % 4], jax.random.fold_in(key, it))
    jax.block_until_ready(metrics)
    if it >= args.warmup:
      times.append(time.perf_counter() - t0)
  return {
    'skill': skill,
    'method': method,
    **({'exact_mode': args.exact_mode} if method == 'exact' else {}),
    'batch': args.batch,
    'layers': args.layers,
    'channels': args.channels,
    'rounds': args.rounds if skill == 'il' else None,
    'tasks': len(IL_CLASSES) if skill == 'il' else 1,
    'compile_s': round(phases.wall_s, 3),
    'trace_s': round(phases.trace_s, 3),
    'lower_s': round(phases.lower_s, 3),
    'xla_s': round(phases.xla_s, 3),
    'median_s': round(statistics.median(times), 4),
    'min_s': round(min(times), 4),
    'max_s': round(max(times), 4),
    'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    'params_m': round(params_m, 6),
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batch', type=int, default=16)
  ap.add_argument('--layers', type=int, default=5)
  ap.add_argument('--channels', type=int, default=8)
  ap.add_argument('--rounds', type=int, default=2)
  ap.add_argument('--iters', type=int, default=3)
  ap.add_argument('--warmup', type=int, default=1)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument(
    '--methods', default='first_order,finite_difference', help=f'Comma separated, from {METHODS}.'
  )
  ap.add_argument('--skills', default=','.join(SKILLS))
  from skillearn_jax.core import hypergradients  # pylint: disable=import-outside-toplevel

  ap.add_argument(
    '--exact_mode',
    default='forward_over_reverse',
    choices=hypergradients.EXACT_MODES,
    help='How the exact rows compute their hypergradient (core.HypergradientOptions.exact_mode).',
  )
  ap.add_argument('--only', default='', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.only:  # child process: one configuration, 'skill:method'
    skill, method = args.only.split(':')
    print(json.dumps(run_one(args, skill, method)), flush=True)
    return
  forwarded = [
    a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith('--only')
  ]
  for method in args.methods.split(','):
    if method not in METHODS:
      raise SystemExit(f'--methods: unknown {method!r}; allowed: {METHODS}')
    for skill in args.skills.split(','):
      if skill not in SKILLS:
        raise SystemExit(f'--skills: unknown {skill!r}; allowed: {SKILLS}')
      proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *forwarded, f'--only={skill}:{method}'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, 'PYTHONPATH': ROOT},
      )
      if proc.returncode:
        print(f'# {skill} {method} failed:\n{proc.stderr[-3000:]}', file=sys.stderr)
        continue
      print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == '__main__':
  sys.path.insert(0, ROOT)
  main()
