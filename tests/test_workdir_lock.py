"""mmer_jax/workdir_lock.py: one training process per workdir; a dead holder's lock is taken
over; two `mmer_jax.main` runs on one workdir."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from mmer_jax import workdir_lock

REPO = pathlib.Path(__file__).resolve().parents[1]
HOLD = ('import sys, time; from mmer_jax import workdir_lock\n'
        'with workdir_lock.hold(sys.argv[1]):\n  print("held", flush=True); time.sleep(60)\n')


def _holding_process(workdir):
  process = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == 'held'
  return process


def test_a_second_process_is_refused_with_the_holder_named(tmp_path):
  holder = _holding_process(tmp_path)
  try:
    with pytest.raises(workdir_lock.WorkdirLocked, match=f'pid {holder.pid} on host'):
      workdir_lock.acquire(str(tmp_path))
  finally:
    holder.kill()
    holder.wait()
  # Its holder was killed (-9): the lock is still there, and is taken over.
  assert (tmp_path / '.lock').exists()
  with workdir_lock.hold(str(tmp_path)):
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
    with workdir_lock.hold(str(tmp_path)):  # nested in the same process: a no-op
      pass
    assert (tmp_path / '.lock').exists()
  assert not (tmp_path / '.lock').exists()


def test_another_hosts_lock_is_stale_only_without_a_heartbeat(tmp_path):
  lock = tmp_path / '.lock'
  lock.write_text(json.dumps({'host': 'elsewhere-' + socket.gethostname(), 'pid': 1,
                              'started': 'earlier'}))
  with pytest.raises(workdir_lock.WorkdirLocked, match='host elsewhere'):
    workdir_lock.acquire(str(tmp_path))
  old = time.time() - workdir_lock.STALE_S - 10
  os.utime(lock, (old, old))
  assert workdir_lock.acquire(str(tmp_path)) == str(lock)
  assert json.loads(lock.read_text())['pid'] == os.getpid()


def test_two_runs_on_one_workdir_the_second_exits_naming_the_first(tmp_path):
  holder = _holding_process(tmp_path / 'run')
  try:
    start = time.monotonic()
    second = subprocess.run([sys.executable, '-m', 'mmer_jax.main',
                             '--config=configs/fusion_iemocap.py:smoke', f'--workdir={tmp_path / "run"}'],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - start
  finally:
    holder.kill()
    holder.wait()
  assert second.returncode == 1 and f'pid {holder.pid}' in second.stderr, second.stderr[-2000:]
  assert 'is in use by' in second.stderr and not (tmp_path / 'run' / 'checkpoints').exists()
  print(f'refused after {seconds:.1f} s (interpreter and imports included)')
