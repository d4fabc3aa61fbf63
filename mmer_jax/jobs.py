"""Runs commands side by side, each on its own slice of the GPUs: the job runner of
`launch/sweep.py` and `launch/table.py` (docs/sweeps.md#devices)."""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Sequence


def run(commands: Sequence[Sequence[str]], *, jobs_at_once: int = 1,
        devices_per_job: int = 0) -> None:
  """Runs `commands`, `jobs_at_once` at a time; with `devices_per_job`, job k sees GPUs
  (k mod jobs_at_once) * devices_per_job ... + devices_per_job - 1 (CUDA_VISIBLE_DEVICES).
  A failed job stops the runner (SystemExit naming its command) once the running ones end."""
  running = []
  at_once = max(jobs_at_once, 1)
  for k, command in enumerate(commands):
    env = dict(os.environ)
    if devices_per_job:
      slot = k % at_once
      env['CUDA_VISIBLE_DEVICES'] = ','.join(
          str(slot * devices_per_job + d) for d in range(devices_per_job))
    print('+ ' + shlex.join(command), flush=True)
    running.append(subprocess.Popen(list(command), env=env))
    if len(running) >= at_once:
      _wait(running.pop(0))
  for process in running:
    _wait(process)


def _wait(process: subprocess.Popen) -> None:
  if process.wait() != 0:
    raise SystemExit(f'job failed (exit {process.returncode}): {shlex.join(process.args)}')
