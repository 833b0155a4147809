"""The full DARTS search's time, projected from a short real search.

  python benchmarks/search_projection.py --out OUT/search_projection.json
  python benchmarks/search_projection.py --precision bfloat16 --out OUT/search_bf16.json
  python benchmarks/search_projection.py --smoke --out /tmp/projection.json   # CPU rehearsal

Runs the CLI, `python -m skillearn_jax.main --config=configs/darts.py:2nd` (DARTS-2nd: batch
64, 8 cells, C = 16, finite-difference hypergradient), for `--steps` steps, logging every
`--log_every`, with no held-out evaluation and no checkpoint before the end. Its data: CIFAR-10
when tfds has it prepared (`--tfds_dir`, default $TFDS_DATA_DIR or ~/tensorflow_datasets),
else synthetic CIFAR-shaped images (uniform uint8 noise, 10 classes, written as an
`array_dir:` dataset of 2 x 64 x steps-per-epoch images): a step costs the same whatever its
pixels, and the host pipeline (crop, flip, normalize) does the same work. The run's rows give
the steady step time (each logged `step_seconds` is the mean since the previous read, and the
first step, its compile, is read alone) and summary.json the compile; the projection is
`compile + epochs x steps_per_epoch x steady step`, with the official search's 50 epochs of
390 steps (CIFAR-10's 25,000-image weight half at batch 64). Not in it: the per-epoch
validation pass (10,000 images, forward only) and checkpoints. Writes one JSON object (keys:
data, precision, steps, steady_step_s, first_step_s, wall_s, projected_search_s,
projected_search_h, ...) to `--out` and stdout; `--smoke` shrinks to the quick supernet, first
order, a few steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_EPOCHS, FULL_STEPS_PER_EPOCH = 50, 25000 // 64  # DARTS-2nd on CIFAR-10


def synthetic_cifar(directory: str, examples: int, side: int = 32) -> str:
  """An `array_dir:` dataset of `examples` random side x side RGB images, 10 classes."""
  rng = np.random.default_rng(0)
  os.makedirs(directory, exist_ok=True)
  np.save(
    os.path.join(directory, 'train-images.npy'),
    rng.integers(0, 256, (examples, side, side, 3), np.uint8),
  )
  np.save(os.path.join(directory, 'train-labels.npy'), np.arange(examples) % 10)
  return 'array_dir:' + directory


def cifar10_prepared(tfds_dir: str) -> bool:
  return os.path.isdir(os.path.join(os.path.expanduser(tfds_dir), 'cifar10'))


def projection(rows, summary, *, epochs: int, steps_per_epoch: int) -> dict:
  """The steady step time (logged rows after the first, weighted by the steps each covers)
  and the projected search: compile + epochs x steps_per_epoch x steady."""
  steps = [r['step'] for r in rows]
  spans = np.diff([1] + steps)  # the first read covers step 1 alone, unlogged
  times = np.array([r['step_seconds'] for r in rows])
  steady = float(np.sum(times * spans) / np.sum(spans))
  first = summary.get('compile', {}).get('first_step', {})
  first_s = float(first.get('wall_s', 0.0)) if isinstance(first, dict) else 0.0
  total = first_s + epochs * steps_per_epoch * steady
  return {
    'steady_step_s': round(steady, 5),
    'first_step_s': round(first_s, 3),
    'full_epochs': epochs,
    'full_steps_per_epoch': steps_per_epoch,
    'projected_search_s': round(total, 1),
    'projected_search_h': round(total / 3600, 3),
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--steps', type=int, default=200)
  ap.add_argument('--log_every', type=int, default=20)
  ap.add_argument('--precision', choices=('float32', 'bfloat16'), default='float32')
  ap.add_argument('--tfds_dir', default=os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'))
  ap.add_argument('--smoke', action='store_true', help='quick supernet, first order, 4 steps')
  ap.add_argument('--out', default='', help='JSON file to write (also printed)')
  args = ap.parse_args(argv)
  variant, steps, log_every = (
    ('1st,quick', 4, 2) if args.smoke else ('2nd', args.steps, args.log_every)
  )
  with tempfile.TemporaryDirectory(prefix='skillearn_projection_') as tmp:
    batch = 32 if args.smoke else 64
    if cifar10_prepared(args.tfds_dir) and not args.smoke:
      data, data_flags = 'cifar10', [f'--config.data.data_dir={args.tfds_dir}']
    else:
      examples = 2 * batch * max(steps, 8)  # one epoch covers the run
      data, data_flags = (
        'synthetic',
        [f'--config.data.name={synthetic_cifar(os.path.join(tmp, "data"), examples)}'],
      )
    workdir = os.path.join(tmp, 'run')
    cmd = [
      sys.executable,
      '-m',
      'skillearn_jax.main',
      f'--config=configs/darts.py:{variant}',
      f'--workdir={workdir}',
      f'--config.max_steps={steps}',
      f'--config.log_every_steps={log_every}',
      '--config.checkpoint_every_steps=1000000',
      '--config.data.eval_examples=0',
      f'--config.net.precision={args.precision}',
      '--config.compilation_cache_dir=',
      *data_flags,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = {
      'data': data,
      'config': f'configs/darts.py:{variant}',
      'precision': args.precision,
      'steps': steps,
      'returncode': proc.returncode,
      'wall_s': round(wall, 1),
    }
    if proc.returncode:
      out['error'] = proc.stderr[-2000:]
    else:
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
      with open(os.path.join(workdir, 'summary.json')) as f:
        summary = json.load(f)
      out.update(
        projection(rows, summary, epochs=FULL_EPOCHS, steps_per_epoch=FULL_STEPS_PER_EPOCH)
      )
      out['devices'] = next(
        (l for l in proc.stdout.splitlines() if l.startswith('JAX devices')), ''
      )
  text = json.dumps(out)
  print(text, flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  return 0 if out['returncode'] == 0 else 1


if __name__ == '__main__':
  sys.exit(main())
