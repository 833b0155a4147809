"""Data parallelism over devices with `jax.sharding`: one mesh axis, 'data'.

This module owns how the training step is spread over devices: the state
(parameters, optimizer and model state) is replicated on every device, each
batch is split along its leading axis over the 'data' mesh axis, and the
step is compiled once for that layout, so XLA inserts the cross-device means
that make the sharded step compute what the single-device step computes.

Several processes (multi-host): the mesh spans every process's devices;
each process gives `shard_batch` either the same global batch (the default)
or, with `per_process=True`, its own share of it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError('make_mesh devices: empty; need at least one device')
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree` with every array placed whole on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def local_device_count(mesh: Mesh) -> int:
  return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def shard_batch(batch: Any, mesh: Mesh, *, per_process: bool = False) -> Any:
  """`batch` split along its leading axis over the mesh's 'data' axis.

  By default `batch` is the global batch, identical in every process (as a
  deterministic pipeline gives); each process transfers only its devices'
  rows. With `per_process`, `batch` is this process's own part of the global
  batch (its devices' share), as a pipeline reading a per-process shard of
  the data gives. With one process the two are the same.
  """
  sharding = batch_sharded(mesh)
  if per_process:
    devices, whose = local_device_count(mesh), 'devices of this process'
  else:
    devices, whose = mesh.size, 'devices of the data-parallel mesh'

  def place(path, leaf):
    leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
    field = jax.tree_util.keystr(path) or '<batch>'
    if leaf.ndim == 0:
      raise ValueError(
        f'shard_batch: batch field {field} is a scalar; every '
        f'batch array needs a leading example axis to split '
        f'over devices'
      )
    if leaf.shape[0] % devices:
      raise ValueError(
        f'config.data.batch_size: batch field {field} has '
        f'{leaf.shape[0]} examples, not divisible by the {devices} '
        f'{whose}; use a batch size that is a multiple of {devices}'
      )
    return jax.make_array_from_process_local_data(
      sharding, leaf, global_shape=None if per_process else leaf.shape
    )

  return jax.tree_util.tree_map_with_path(place, batch)


def jit_data_parallel(step_fn: Callable, mesh: Mesh, *, donate: bool = False) -> Callable:
  """Compiles `step(state, batches, key) -> (state, metrics)` for the mesh.

  `step_fn` is the engine's raw step (`core.make_step(..., jit=False)`).
  State and key come in replicated, batches split over 'data'; the new
  state and the metrics come out replicated. Host (numpy) batches are split
  on the way in when one process runs; with several, pass `shard_batch`'s
  arrays. Arrays already committed to another layout are refused by
  jit, so place the initial state with `replicate` (and restore checkpoints
  into a replicated template). `donate` reuses the old state's buffers.
  """
  rep = replicated(mesh)
  return jax.jit(
    step_fn,
    in_shardings=(rep, batch_sharded(mesh), rep),
    out_shardings=(rep, rep),
    donate_argnums=(0,) if donate else (),
  )
