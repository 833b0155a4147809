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

A checkpoint damaged after it was committed (a truncated array file, a lost
`_METADATA` or manifest, an emptied step directory) must not block a resume:
`restore_newest` moves it aside into `damaged_checkpoints/` beside the
checkpoint directory (renamed, never deleted), says so in one line and goes
on with the next newest. If no checkpoint restores, that is the user's to
decide (`CheckpointError`), not a fresh start.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from typing import Any, Callable

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


class CheckpointError(RuntimeError):
  """No checkpoint of a run restores; the message says what to do."""


# What a committed orbax step directory of ours holds; a step missing any is damaged.
_REQUIRED = ('_CHECKPOINT_METADATA', 'state/_METADATA', 'state/manifest.ocdbt', 'extra/metadata')


def _missing(step_dir: str) -> list[str]:
  return [name for name in _REQUIRED if not os.path.exists(os.path.join(step_dir, name))]


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  line = f'{type(error).__name__}: {text[0] if text else ""}'
  return line if len(line) <= 160 else line[:157] + '...'


@contextlib.contextmanager
def _quiet_tensorstore():
  """A failed read leaves one unretrieved future per array, each of which asyncio logs as a
  page of tensorstore spec when collected; the one line of `restore_newest` says it all."""
  logger = logging.getLogger('asyncio')
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    gc.collect()  # collect the failed futures while their log is off
    logger.setLevel(level)


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

  def restore_newest(
    self, template: ProgramState, *, say: Callable[[str], None] = print
  ) -> tuple[int, ProgramState, dict] | None:
    """(step, state, extra) of the newest checkpoint that restores, or None when there is
    none. Damaged newer ones are moved aside (`quarantine`), each with a line to `say`.

    A step directory missing one of orbax's files is damaged outright. One that fails to
    read is damaged when an older one reads; when none reads the failure is more likely
    the run's (another program, another library version) than the disk's, and
    CheckpointError says so, leaving every checkpoint where it is.
    """
    failures = []  # (step, reason) of those that did not read, newest first
    for step in reversed(self.all_steps()):
      missing = _missing(os.path.join(self.directory, str(step)))
      if missing:
        say(self.quarantine(step, f'missing {", ".join(missing)}'))
        continue
      try:
        with _quiet_tensorstore():
          state, extra = self.restore(template, step)
      except Exception as error:  # pylint: disable=broad-except  # tensorstore, orbax, OS
        failures.append((step, _first_line(error)))
        continue
      for failed, reason in failures:
        say(self.quarantine(failed, f'it does not read ({reason})'))
      return step, state, extra
    if failures:
      step, reason = failures[0]
      raise CheckpointError(
        f'checkpoint: no checkpoint in {self.directory} restores (step {step}: {reason}); '
        'start over in a new workdir, or move the checkpoints directory aside'
      )
    return None

  def quarantine(self, step: int, why: str) -> str:
    """Moves checkpoint `step` into `damaged_checkpoints/` beside the checkpoint directory;
    returns the line that says so."""
    where = os.path.join(os.path.dirname(self.directory), 'damaged_checkpoints')
    os.makedirs(where, exist_ok=True)
    target = os.path.join(where, f'{step}.{time.strftime("%Y%m%d-%H%M%S")}')
    suffix = 0
    while os.path.exists(target + (f'.{suffix}' if suffix else '')):
      suffix += 1
    target += f'.{suffix}' if suffix else ''
    os.rename(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return f'checkpoint {step} is damaged ({why}); moved aside to {target}'

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
