"""The DARTS-family variants' search steps on this machine, side by side, as JSON.

  python benchmarks/variants.py --out benchmarks/variants.json

PC-DARTS' point is memory: its mixed ops see 1/K of the channels. This runs, first order, at
5 cells and C = 16 (each row its own process, `search_step.py`): DARTS at batch 64, PC-DARTS
(K = 4) at batch 64 and 256, both without recomputing the mixed ops (`--remat off`, as the
PyTorch codes run) at `--no_remat_batch`, and one step of each P-DARTS stage (5 cells with 8
ops, 11 with 5, 17 with 3, at `--pdarts_batch`). It prints each row and writes them with the ratios
(PC-DARTS peak memory and step time over DARTS' at batch 64) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = os.path.join(ROOT, 'benchmarks', 'search_step.py')


def measure(*flags, iters: int) -> dict | None:
  cmd = [
    sys.executable,
    STEP,
    '--impl',
    'jax',
    '--methods',
    'first_order',
    '--channels',
    '16',
    '--iters',
    str(iters),
    '--warmup',
    '1',
    *flags,
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
  if proc.returncode or not proc.stdout.strip():
    print(f'# failed: {" ".join(flags)}\n{proc.stderr[-2000:]}', file=sys.stderr)
    return None
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  print(json.dumps(row), flush=True)
  return row


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--out', default='')
  ap.add_argument('--iters', type=int, default=3)
  ap.add_argument('--pdarts_batch', type=int, default=32)
  ap.add_argument('--skip_pdarts', action='store_true')
  ap.add_argument('--no_remat_batch', type=int, default=16)
  args = ap.parse_args(argv)
  rows = {
    'darts_b64': measure('--space', 'darts', '--batch', '64', '--layers', '5', iters=args.iters),
    'pcdarts_b64': measure(
      '--space', 'pcdarts', '--batch', '64', '--layers', '5', iters=args.iters
    ),
    'pcdarts_b256': measure(
      '--space', 'pcdarts', '--batch', '256', '--layers', '5', iters=args.iters
    ),
  }
  # Without recomputation (net.remat off), as the official PyTorch codes run, the mixed ops'
  # intermediates stay in memory: what partial channels cut.
  for space in ('darts', 'pcdarts'):
    rows[f'{space}_b{args.no_remat_batch}_remat_off'] = measure(
      '--space',
      space,
      '--batch',
      str(args.no_remat_batch),
      '--layers',
      '5',
      '--remat',
      'off',
      iters=args.iters,
    )
  if not args.skip_pdarts:
    for layers, ops in ((5, 8), (11, 5), (17, 3)):
      rows[f'pdarts_stage_{layers}cells_{ops}ops'] = measure(
        '--space',
        'pdarts',
        '--batch',
        str(args.pdarts_batch),
        '--layers',
        str(layers),
        '--ops_per_edge',
        str(ops),
        iters=args.iters,
      )
  darts = rows['darts_b64']
  ratios = {}
  for name in ('pcdarts_b64', 'pcdarts_b256'):
    if darts and rows[name]:
      for key in ('peak_rss_mb', 'xla_temp_mb', 'median_s'):
        ratios[f'{name}/{key}'] = round(rows[name][key] / darts[key], 3)
  plain = rows.get(f'darts_b{args.no_remat_batch}_remat_off')
  partial = rows.get(f'pcdarts_b{args.no_remat_batch}_remat_off')
  if plain and partial:
    for key in ('peak_rss_mb', 'xla_temp_mb', 'median_s'):
      ratios[f'pcdarts_over_darts_remat_off/{key}'] = round(partial[key] / plain[key], 3)
  report = {'rows': rows, 'ratios_over_darts_b64': ratios}
  print(json.dumps({'ratios_over_darts_b64': ratios}), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  main()
