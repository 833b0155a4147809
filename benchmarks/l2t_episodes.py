"""Learning to Teach: teacher-training episodes per minute, vmapped against one at a time.

  python benchmarks/l2t_episodes.py --variant quick --parallel 8 --out benchmarks/l2t_episodes.json
  python benchmarks/l2t_episodes.py --variant mnist_t10k --parallel 8 --repeats 1 --teacher_steps 2

For a configs/l2t.py variant this times `l2t.parallel_episodes` on `--parallel` episodes at once
(one jitted call, students vmapped) against the same episodes run one at a time (a jitted
single-episode call per episode), each after a compile-and-warm-up call, over `--repeats`
batches of fresh keys; and the wall time of the teacher stage through the runner (compile
included) with `--teacher_steps` steps. Prints and writes one JSON object: variant, parallel,
episodes_per_min_vmapped, episodes_per_min_sequential, speedup, mean_i_tau, compile_s of
each, teacher_stage_wall_s, teacher_steps, device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='quick')
  parser.add_argument('--parallel', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--teacher_steps', type=int, default=0, help='0: the variant\'s own')
  parser.add_argument('--data', default='', help='override data.name')
  parser.add_argument('--out', default='')
  args = parser.parse_args()

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from configs import l2t as l2t_config  # pylint: disable=import-outside-toplevel
  from skillearn_jax.run import runner  # pylint: disable=import-outside-toplevel
  from skillearn_jax.skills import l2t, l2t_run, l2t_students  # pylint: disable=import-outside-toplevel

  config = l2t_config.get_config(args.variant)
  if args.data:
    config.data.name = args.data
  if args.teacher_steps:
    config.l2t.teacher_steps = args.teacher_steps
  data = l2t_run.layout(config.data, config.data.name)
  model, optimizer = l2t_students.make_student(config.student, data['num_classes'])
  s = l2t_run.settings(config, data['num_classes'], stop_at_tau=True)
  task = l2t.Task(*map(jnp.asarray, (*data['teacher'], *data['dev'])))
  theta = l2t.init_teacher(jax.random.key(0), l2t.feature_dim(data['num_classes']))
  vmapped = jax.jit(lambda keys: l2t.parallel_episodes(model, optimizer, s, task, theta, keys))
  single = jax.jit(lambda key: l2t.episode(model, optimizer, s, task, theta, key))

  def timed(fn, *a):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*a))
    return time.perf_counter() - t0

  root = jax.random.key(1)
  batches = [
    jax.random.split(jax.random.fold_in(root, r + 1), args.parallel) for r in range(args.repeats)
  ]
  compile_vmapped = timed(vmapped, jax.random.split(root, args.parallel))
  compile_single = timed(single, root)
  t_vmapped = sum(timed(vmapped, keys) for keys in batches)
  t_single = sum(timed(single, k) for keys in batches for k in keys)
  i_tau = [float(jnp.mean(vmapped(keys)[2]['i_tau'])) for keys in batches[:1]]
  episodes = args.parallel * args.repeats
  result = {
    'variant': args.variant,
    'data': config.data.name,
    'parallel': args.parallel,
    'repeats': args.repeats,
    'episodes_per_min_vmapped': 60 * episodes / t_vmapped,
    'episodes_per_min_sequential': 60 * episodes / t_single,
    'speedup': t_single / t_vmapped,
    'mean_i_tau': float(np.mean(i_tau)),
    'horizon': s.horizon,
    'compile_s_vmapped': compile_vmapped,
    'compile_s_single': compile_single,
  }
  with tempfile.TemporaryDirectory() as workdir:
    config.l2t.stage = 'teacher'
    config.log_every_steps = 1000
    t0 = time.perf_counter()
    runner.run(config, workdir)
    result['teacher_stage_wall_s'] = time.perf_counter() - t0
    result['teacher_steps'] = config.l2t.teacher_steps
    result['parallel_episodes'] = config.l2t.parallel_episodes
  result['device'] = str(jax.devices()[0].device_kind)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  main()
