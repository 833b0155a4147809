"""Saving and restoring the training state, with small JSON metadata beside it.

This module owns the checkpoint directory of a run: one orbax step directory
per saved step holding the `ProgramState` pytree (`state/`) and a JSON record
(`extra/`, e.g. epoch and history). Orbax writes each step into a temporary
`<step>.orbax-checkpoint-tmp-*` directory and renames it when complete, so a
crash mid-save leaves the previous checkpoints intact and the half-written one
invisible to `latest_step` and `restore`; leftovers are deleted when the next
`Checkpointer` opens the directory. Saves block until written. Restoring goes
through a template state, so optax's NamedTuple states come back as the same
types (and arrays with the template's shardings).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from skillearn_jax.core import ProgramState


def _to_json_value(value: Any) -> Any:
  # Metadata often holds numpy / jax scalars taken from metrics.
  if isinstance(value, np.generic) or (hasattr(value, 'shape') and hasattr(value, 'dtype')):
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()
  raise TypeError(
    f'checkpoint extra: {type(value).__name__} value {value!r} is not JSON-serializable'
  )


def to_json_compatible(extra: dict) -> dict:
  """`extra` with numpy / jax values made plain Python, checked JSON-able."""
  if not isinstance(extra, dict):
    raise ValueError(f'checkpoint extra: must be a dict, got {type(extra).__name__}')
  return json.loads(json.dumps(extra, default=_to_json_value))


class Checkpointer:
  """The checkpoints of one run in `directory`, keeping the newest `keep`."""

  def __init__(self, directory: str, *, keep: int = 2):
    if keep < 1:
      raise ValueError(
        f'Checkpointer keep: {keep!r} is not allowed; must be >= 1 (config.keep_checkpoints)'
      )
    self.directory = os.path.abspath(os.path.expanduser(directory))
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=('state', 'extra')
    )

  def save(self, step: int, state: ProgramState, extra: dict) -> bool:
    """Writes `state` and `extra` as checkpoint `step`; blocks until done.

    Returns False (and writes nothing) when a checkpoint at `step` or later
    already exists, e.g. the final save of a run resumed at its last step.
    """
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(to_json_compatible(extra))
    )
    saved = self._manager.save(int(step), args=args)
    self._manager.wait_until_finished()
    return saved

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None if there is none."""
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def restore(self, template: ProgramState, step: int | None = None) -> tuple[ProgramState, dict]:
    """Checkpoint `step` (default: the newest) in `template`'s structure.

    `template` may hold arrays or `jax.ShapeDtypeStruct`s; restored arrays
    take its dtypes and shardings.
    """
    restored = self._manager.restore(
      self._existing(step),
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(template), extra=ocp.args.JsonRestore()
      ),
    )
    return restored.state, restored.extra

  def restore_extra(self, step: int | None = None) -> dict:
    """The JSON record of checkpoint `step` (default: the newest) alone,
    e.g. a run's history, without building a template state."""
    return self._manager.restore(
      self._existing(step), args=ocp.args.Composite(extra=ocp.args.JsonRestore())
    ).extra

  def _existing(self, step: int | None) -> int:
    available = self.all_steps()
    if step is None:
      if not available:
        raise FileNotFoundError(f'no checkpoint in {self.directory}')
      return available[-1]
    if step not in available:
      raise ValueError(
        f'checkpoint step: {step!r} is not in {self.directory}; available steps: {available}'
      )
    return int(step)

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
