"""One process per workdir: the second one refuses at once, naming the first.

This module owns `hold(workdir)`, a context manager over an exclusive `flock` on
`WORKDIR/.lock`, a file that names its holder (pid, host, start time). Two commands on one
workdir would both train and both write checkpoints; the second is refused before it builds
anything. The kernel drops a `flock` when its process dies, however it dies, so a lock left by a
killed run is free: the next run takes it over and says whose it was.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket

LOCK_FILE = '.lock'


class WorkdirBusyError(RuntimeError):
  """Another process holds the workdir."""


class WorkdirError(OSError):
  """The workdir cannot be a run's: a file, not writable, or not creatable."""


def check_usable(workdir: str) -> None:
  """Raises WorkdirError, one line saying why, unless `workdir` is (or can be made) a
  writable directory; creates nothing."""
  if not workdir:
    raise WorkdirError('--workdir: empty; give a directory for checkpoints, metrics and plots')
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise WorkdirError(f'--workdir {workdir}: is a file, not a directory; give a directory')
    if not os.access(path, os.W_OK | os.X_OK):
      raise WorkdirError(f'--workdir {workdir}: is not writable by this user; give another')
    return
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise WorkdirError(f'--workdir {workdir}: {parent} is a file, so it cannot be created')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise WorkdirError(f'--workdir {workdir}: cannot be created, {parent} is not writable')


def _read(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    return json.loads(os.read(fd, 4096).decode() or '{}')
  except ValueError:
    return {}


def _describe(holder: dict) -> str:
  return (
    f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
    f"started {holder.get('started', '?')}"
  )


@contextlib.contextmanager
def hold(workdir: str):
  """Holds `workdir` for this process; raises WorkdirBusyError when another one does. A run
  that fails in a workdir this call created leaves no lock file (nor an empty workdir) behind."""
  check_usable(workdir)
  created = not os.path.exists(workdir)
  path = os.path.join(workdir, LOCK_FILE)
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as error:  # a read-only file system, or what access() could not tell
    raise WorkdirError(
      f'--workdir {workdir}: cannot be written ({error.strerror or error}); give another'
    ) from None
  failed = False
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(
        f'workdir {workdir!r} is in use by {_describe(_read(fd))}; wait for that run to end '
        'or use another --workdir'
      ) from None
    previous = _read(fd)
    if previous.get('pid') not in (None, os.getpid()):
      print(
        f'taking over the lock of a run that ended without releasing it ({_describe(previous)})'
      )
    me = {
      'pid': os.getpid(),
      'host': socket.gethostname(),
      'started': datetime.datetime.now().isoformat(timespec='seconds'),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode())
    os.fsync(fd)
    try:
      yield me
    except BaseException:
      failed = True
      raise
    finally:
      os.ftruncate(fd, 0)  # released cleanly: nothing to take over
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
    if failed and created:
      os.remove(path)
      with contextlib.suppress(OSError):
        os.rmdir(workdir)  # only if the failed run left it empty
