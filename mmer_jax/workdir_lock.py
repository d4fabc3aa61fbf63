"""One writer per workdir: a run, sweep or table holds `<workdir>/.lock` while it trains
(docs/training.md#the-workdir-lock).

The lock file names its holder (host, pid, start time) and is refreshed every `HEARTBEAT_S`
seconds. A second process exits at once with `WorkdirLocked` naming the holder. A lock whose
holder is gone (same host and the pid dead, or no heartbeat for `STALE_S` seconds) is taken
over with a warning. Several hosts: process 0 alone takes it. Evaluation reads only and takes
no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time

from absl import logging

from mmer_jax import parallel

LOCK_FILE = '.lock'
HEARTBEAT_S = 30.0
STALE_S = 300.0  # another host's lock without a heartbeat for this long: its holder is gone


_held: set[str] = set()  # the lock files this process holds (a nested hold is a no-op)


class WorkdirLocked(RuntimeError):
  """Another live process trains in this workdir."""


def _holder_text(holder: dict) -> str:
  return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
          f"{holder.get('started')}")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


def _is_gone(holder: dict, age_s: float) -> bool:
  """Whether a lock's holder has gone (it died without removing the lock)."""
  if holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int):
    return not _alive(holder['pid'])
  return age_s > STALE_S


def _read(path: str) -> tuple[dict, float]:
  """(the holder, the lock's age in seconds); an unreadable lock counts as an unknown holder."""
  try:
    with open(path, encoding='utf-8') as f:
      holder = json.load(f)
  except (OSError, ValueError):
    holder = {}
  try:
    age = time.time() - os.path.getmtime(path)
  except OSError:
    age = 0.0
  return holder, age


def acquire(workdir: str) -> str:
  """Takes `<workdir>/.lock` (creating the workdir) or raises WorkdirLocked; returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  me = {'host': socket.gethostname(), 'pid': os.getpid(),
        'started': datetime.datetime.now().isoformat(timespec='seconds')}
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder, age = _read(path)
      if holder.get('host') == me['host'] and holder.get('pid') == me['pid']:
        return path  # this process already holds it (a staged run's inner call)
      if not _is_gone(holder, age):
        raise WorkdirLocked(
            f'{workdir} is in use by {_holder_text(holder)} ({path}); wait for it to finish or '
            'stop it, or use another --workdir. Evaluation (--mode=evaluate) needs no lock.')
      logging.warning('taking over the lock of %s: its holder (%s) is gone', workdir,
                      _holder_text(holder))
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(me, f)
    return path
  raise WorkdirLocked(f'{workdir}: could not take {path} (another process keeps taking it)')


@contextlib.contextmanager
def hold(workdir: str):
  """Holds the workdir's lock (process 0 only) for the block, refreshing its heartbeat."""
  path = os.path.abspath(os.path.join(workdir, LOCK_FILE))
  if not parallel.is_main_process() or path in _held:
    yield
    return
  path = os.path.abspath(acquire(workdir))
  _held.add(path)
  stop = threading.Event()

  def beat():
    while not stop.wait(HEARTBEAT_S):
      with contextlib.suppress(OSError):
        os.utime(path)
  thread = threading.Thread(target=beat, name='workdir-lock-heartbeat', daemon=True)
  thread.start()
  try:
    yield
  finally:
    _held.discard(path)
    stop.set()
    thread.join(timeout=1.0)
    holder, _ = _read(path)
    if holder.get('pid') == os.getpid():
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
