"""Two workdirs of the same command, compared: genotype.json and every logged metric.

  python benchmarks/compare_runs.py RUNS_BEFORE RUNS_AFTER [NAME ...]

For each NAME (default: darts lpt_darts il_darts mtl_darts eval_cifar, one workdir each under
both roots, e.g. made by `python -m skillearn_jax.main --config=configs/NAME.py:quick
--workdir=ROOT/NAME` at two commits) it prints whether the genotypes are equal and the largest
relative difference over summary.json's final metrics and every metrics.jsonl row (timings
left out), and exits 1 when any is above --rtol.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

TIMINGS = ('step_seconds', 'examples_per_second')
NAMES = ('darts', 'lpt_darts', 'il_darts', 'mtl_darts', 'eval_cifar')


def _rel(a: float, b: float) -> float:
  return abs(a - b) / max(abs(a), 1e-12)


def compare(before: str, after: str) -> dict:
  load = lambda root, name: json.load(open(os.path.join(root, name)))
  rows = lambda root: [json.loads(l) for l in open(os.path.join(root, 'metrics.jsonl'))]
  final_a = load(before, 'summary.json')['final_metrics']
  final_b = load(after, 'summary.json')['final_metrics']
  keys = sorted(k for k in final_a if k not in TIMINGS)
  if keys != sorted(k for k in final_b if k not in TIMINGS):
    raise SystemExit(f'{after}: other final metrics than {before}')
  ra, rb = rows(before), rows(after)
  return {
    'genotype_equal': load(before, 'genotype.json') == load(after, 'genotype.json'),
    'final_metrics': len(keys),
    'final_max_rel_diff': max(_rel(final_a[k], final_b[k]) for k in keys),
    'rows': [len(ra), len(rb)],
    'rows_max_rel_diff': max(
      _rel(x[k], y[k]) for x, y in zip(ra, rb) for k in x if k not in TIMINGS
    ),
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('before')
  ap.add_argument('after')
  ap.add_argument('names', nargs='*', default=list(NAMES))
  ap.add_argument('--rtol', type=float, default=1e-6)
  args = ap.parse_args(argv)
  worst = 0.0
  for name in args.names:
    result = compare(os.path.join(args.before, name), os.path.join(args.after, name))
    print(json.dumps({'run': name, **result}), flush=True)
    if not result['genotype_equal'] or result['rows'][0] != result['rows'][1]:
      worst = float('inf')
    worst = max(worst, result['final_max_rel_diff'], result['rows_max_rel_diff'])
  sys.exit(0 if worst <= args.rtol else 1)


if __name__ == '__main__':
  main()
