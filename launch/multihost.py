"""Multi-process entry point: join the JAX cluster, then run skillearn_jax.main.

This module owns the cluster flags of a multi-host run and nothing else:
`--coordinator_address`, `--num_processes`, `--process_id` (or the
environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; flags win). It calls `jax.distributed.initialize` with them
(with none given, JAX detects SLURM, Open MPI, Kubernetes or Cloud TPU by
itself), then hands every other flag unchanged to `skillearn_jax.main`, the
single-process command. Run it from the repository root on every host:

  python -m launch.multihost --coordinator_address=host0:1234 \\
      --num_processes=2 --process_id=0 \\
      --config=configs/darts.py:quick --workdir=/shared/runs/quick

`--initialize_only` joins the cluster, prints what this process sees as one
JSON line and exits: a check of the cluster set-up without training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'


def _int_from_env(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ''):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'environment variable {name}: {value!r} is not an integer') from None


def parse_cluster_flags(argv: Sequence[str]):
  """(cluster settings, the remaining argv for skillearn_jax.main)."""
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument('--coordinator_address', default=os.environ.get(ENV_COORDINATOR) or None)
  parser.add_argument('--num_processes', type=int, default=_int_from_env(ENV_NUM_PROCESSES))
  parser.add_argument('--process_id', type=int, default=_int_from_env(ENV_PROCESS_ID))
  parser.add_argument('--initialization_timeout', type=int, default=300)
  parser.add_argument('--initialize_only', action='store_true')
  cluster, rest = parser.parse_known_args(list(argv[1:]))
  given = [cluster.coordinator_address, cluster.num_processes, cluster.process_id]
  if any(v is not None for v in given) and any(v is None for v in given):
    raise ValueError(
      'launch: give all of --coordinator_address, --num_processes and '
      '--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, '
      'JAX_PROCESS_ID), or none of them to let JAX detect the cluster; got '
      f'coordinator_address={cluster.coordinator_address!r}, '
      f'num_processes={cluster.num_processes!r}, '
      f'process_id={cluster.process_id!r}'
    )
  if cluster.num_processes is not None:
    if cluster.num_processes < 1:
      raise ValueError(
        f'launch --num_processes: {cluster.num_processes} is not allowed; must be >= 1'
      )
    if not 0 <= cluster.process_id < cluster.num_processes:
      raise ValueError(
        f'launch --process_id: {cluster.process_id} is not '
        f'allowed; must be in [0, {cluster.num_processes})'
      )
  return cluster, [argv[0]] + rest


def initialize(cluster) -> dict:
  """Joins the cluster; returns what this process sees."""
  import jax  # pylint: disable=g-import-not-at-top

  jax.distributed.initialize(
    coordinator_address=cluster.coordinator_address,
    num_processes=cluster.num_processes,
    process_id=cluster.process_id,
    initialization_timeout=cluster.initialization_timeout,
  )
  return {
    'process_index': jax.process_index(),
    'process_count': jax.process_count(),
    'local_devices': jax.local_device_count(),
    'global_devices': jax.device_count(),
  }


def main(argv: Sequence[str]) -> None:
  cluster, rest = parse_cluster_flags(argv)
  seen = initialize(cluster)
  if cluster.initialize_only:
    if len(rest) > 1:
      raise ValueError(f'launch --initialize_only: takes no other flags; got {rest[1:]}')
    print(json.dumps(seen), flush=True)
    return
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from skillearn_jax import main as single_process  # pylint: disable=g-import-not-at-top

  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(single_process.main, argv=rest)


if __name__ == '__main__':
  main(sys.argv)
