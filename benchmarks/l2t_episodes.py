"""Learning to Teach: teacher-training episodes per minute, vmapped against one at a time.

  python benchmarks/l2t_episodes.py --variant quick --repeats 20 --host_devices 2
  python benchmarks/l2t_episodes.py --variant mnist_t10k --repeats 2 --teacher_steps 3 --host_devices 2

For a configs/l2t.py variant, with the XLA flags the CLI runs with, this times
- episodes to τ (the teacher's, at its init): `--parallel` episodes one at a time (a jitted
  single-episode call each), vmapped in one call on one device, and, with `--host_devices`
  N > 1 (CPU only: the cores as N host devices), vmapped and split over the N devices
  (`l2t.parallel_episodes(mesh=...)`), over `--repeats` batches of fresh keys, each after a
  compile-and-warm-up call. A vmapped batch runs until its slowest episode reaches τ;
- the same three on `--fixed_checks` blocks of `check_every` steps with no stop (the student
  step itself, without that wait), with the arithmetic of one episode step (XLA's cost
  analysis of a student step and its share of a held-out check) and the rate it runs at,
  against the rate of one large f32 matmul here (`matmul_gflops`, the roof for these steps);
- the floor: the student's bare training step on M examples (no teacher, features or
  checks), one student against `--parallel` vmapped on one device (µs per student);
- the wall time of the teacher stage through the runner (compile included) with
  `--teacher_steps` steps, on every device.
Prints and writes (`--out`) one JSON object.
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


def _timed(fn, *args):
  import jax  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def _best(fn, *args, repeats=3):
  _timed(fn, *args)
  return min(_timed(fn, *args) for _ in range(repeats))


def _matmul_gflops() -> float:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  a = jnp.ones((1024, 1024), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  return 2 * 1024**3 / _best(f, a, repeats=10) / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='quick')
  parser.add_argument('--parallel', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--fixed_checks', type=int, default=10)
  parser.add_argument('--host_devices', type=int, default=0, help='CPU: cores as N devices')
  parser.add_argument('--teacher_steps', type=int, default=0, help="0: the variant's own")
  parser.add_argument('--data', default='', help='override data.name')
  parser.add_argument('--out', default='')
  args = parser.parse_args()

  from skillearn_jax.run import xla_flags  # pylint: disable=import-outside-toplevel

  if args.host_devices > 1:
    flag = f'--xla_force_host_platform_device_count={args.host_devices}'
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {flag}'.strip()
  xla_flags.apply_defaults()  # as the CLI runs

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel

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
  mesh = Mesh(np.asarray(jax.devices()), ('data',))
  ways = {
    'sequential': jax.jit(lambda key: l2t.episode(model, optimizer, s, task, theta, key)),
    'vmapped': jax.jit(lambda keys: l2t.parallel_episodes(model, optimizer, s, task, theta, keys)),
  }
  if mesh.size > 1:
    ways['split'] = jax.jit(
      lambda keys: l2t.parallel_episodes(model, optimizer, s, task, theta, keys, mesh)
    )

  root = jax.random.key(1)
  batches = [
    jax.random.split(jax.random.fold_in(root, r + 1), args.parallel) for r in range(args.repeats)
  ]
  result = {'variant': args.variant, 'data': config.data.name, 'parallel': args.parallel}
  result.update(repeats=args.repeats, devices=mesh.size, horizon=s.horizon)
  seconds = {}
  for name, fn in ways.items():
    one = name == 'sequential'
    result[f'compile_s_{name}'] = _timed(fn, root if one else jax.random.split(root, args.parallel))
    if one:
      seconds[name] = sum(_timed(fn, k) for keys in batches for k in keys)
    else:
      seconds[name] = sum(_timed(fn, keys) for keys in batches)
    result[f'episodes_per_min_{name}'] = 60 * args.parallel * args.repeats / seconds[name]
  for name in ways:
    if name != 'sequential':
      result[f'speedup_{name}'] = seconds['sequential'] / seconds[name]
  result['mean_i_tau'] = float(jnp.mean(ways['vmapped'](batches[0])[2]['i_tau']))

  # The step itself: fixed blocks, no stop, so no batch waits for its slowest episode.
  checks, every = args.fixed_checks, s.check_every

  def fixed(key):
    k_init, k_run = jax.random.split(l2t.threefry_key(key))
    st = l2t.init_student(model, optimizer, s, task.train_x, theta, k_init)
    return l2t.run_checks(model, optimizer, s, task, theta, 0, k_run, st, 0, checks).curve_acc

  keys = batches[0]
  step_us = {'sequential': _best(jax.jit(fixed), keys[0]) * args.parallel}
  step_us['vmapped'] = _best(jax.jit(jax.vmap(fixed)), keys)
  if mesh.size > 1:
    step_us['split'] = _best(jax.jit(l2t.over_devices(jax.vmap(fixed), mesh)), keys)
  for name, total in step_us.items():
    result[f'fixed_us_per_episode_step_{name}'] = 1e6 * total / (args.parallel * checks * every)
    if name != 'sequential':
      result[f'fixed_speedup_{name}'] = step_us['sequential'] / total

  st = l2t.init_student(model, optimizer, s, task.train_x, theta, jax.random.key(0))
  drawn = l2t.draws(s, task.train_y.shape[0], jax.random.key(0), 0)
  step_cost = (
    jax.jit(lambda st: l2t.student_step(model, optimizer, s, task, theta, 0, None, st, 0, drawn))
    .lower(st)
    .compile()
    .cost_analysis()
  )
  check_cost = jax.jit(lambda st: l2t._check(model, s, task, 0, st)).lower(st).compile()  # pylint: disable=protected-access
  flops = step_cost['flops'] + check_cost.cost_analysis()['flops'] / every
  result['mflop_per_episode_step'] = flops / 1e6
  for name in step_us:
    per_step = result[f'fixed_us_per_episode_step_{name}'] * 1e-6
    result[f'gflops_{name}'] = flops / per_step / 1e9
  result['matmul_gflops'] = _matmul_gflops()

  # The floor: the student's bare training step (forward, backward, optimizer; no teacher,
  # features or checks) on a minibatch of M, one student against `--parallel` vmapped.
  def bare(params, opt_state, x, y):
    def loss(p):
      logits = model.apply(p, x)
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def bare_loop(step):
    return jax.jit(lambda c, x, y: jax.lax.fori_loop(0, 200, lambda i, c: step(*c, x, y), c))

  m = s.batch_size
  x, y = task.train_x[:m], task.train_y[:m]
  params = jax.vmap(lambda k: model.init(k, x[:1]))(keys)
  carry = (params, jax.vmap(optimizer.init)(params))
  one = jax.tree_util.tree_map(lambda a: a[0], carry)
  xs = jnp.stack([x] * args.parallel)
  ys = jnp.stack([y] * args.parallel)
  result['bare_step_us_one'] = _best(bare_loop(bare), one, x, y) / 200 * 1e6
  per = _best(bare_loop(jax.vmap(bare)), carry, xs, ys) / 200 * 1e6 / args.parallel
  result['bare_step_us_per_student_vmapped'] = per

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
