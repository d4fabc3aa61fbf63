"""Preemption: SIGTERM or SIGINT asks the training loop to stop at the next step boundary with a
checkpoint of that step (docs/training.md#preemption).

`watch()` installs the handlers for a block (main thread only); `requested()` is what the loop
polls after each step; a second signal stops the process at once (status 128 + signal). A run
that stopped this way raises `Preempted`, and `mmer_jax.main` exits with `EXIT_PREEMPTED` (75,
EX_TEMPFAIL), on which `launch/slurm.sh` requeues the job; rerunning the command resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from absl import logging

EXIT_PREEMPTED = 75
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: list[int] = []  # the signal that asked, once one did


class Preempted(RuntimeError):
  """Training stopped on a signal after saving the latest checkpoint of the step in flight."""


def requested() -> bool:
  return bool(_requested)


def _handle(signum, frame):  # pylint: disable=unused-argument
  if _requested:
    logging.warning('second signal %d: stopping at once', signum)
    os._exit(128 + signum)  # pylint: disable=protected-access
  _requested.append(signum)
  logging.warning('signal %d: stopping after the step in flight, with a checkpoint of it '
                  '(a second signal stops at once)', signum)


@contextlib.contextmanager
def watch():
  """Handles SIGTERM / SIGINT as preemption requests inside the block (main thread only; else
  a no-op)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.signal(s, _handle) for s in _SIGNALS}
  _requested.clear()
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    _requested.clear()
