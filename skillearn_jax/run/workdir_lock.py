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
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
