"""Where a run's numbers go: TensorBoard event files (tensorboardX, no TensorFlow), a JSONL file,
and a progress line with step, loss, steps/s and ETA on the log.

(clu's metric_writers import TensorFlow at package import time, so they are not used here.)
With several processes (`jax.distributed`), only process 0 writes the files (`for_process`);
every process still logs its progress line.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

from absl import logging
import numpy as np


def write_atomic(path: str, text: str) -> str:
  """Writes `text` to `path` through `path.tmp` and a rename, so that a reader, or a run killed
  mid-write, never sees half a file (the previous version stays until the new one is whole)."""
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(path + '.tmp', path)
  return path


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard/` and `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    os.makedirs(workdir, exist_ok=True)
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    for key, value in scalars.items():
      self._tb.add_scalar(key, value, global_step=int(step))
    self._jsonl.write(json.dumps({'step': int(step), **scalars}) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    self._tb.close()
    self._jsonl.close()


class NullWriter:
  """A `MetricWriter` that writes nothing (the processes other than 0 of a multi-process run)."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    del step, scalars

  def close(self) -> None:
    pass


def for_process(workdir: str, main: bool) -> MetricWriter | NullWriter:
  """The writer of this process: a `MetricWriter` on the `main` process, else a `NullWriter`."""
  return MetricWriter(workdir) if main else NullWriter()


class Progress:
  """Logs `step/total loss steps/s ETA` every call; rates over the window since the last call."""

  def __init__(self, total_steps: int, start_step: int = 0):
    self.total, self._last_step, self._last_time = total_steps, start_step, time.perf_counter()

  def __call__(self, step: int, loss: float) -> dict:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    eta = (self.total - step) / max(rate, 1e-9)
    logging.info('step %d/%d  loss %.4f  %.2f steps/s  ETA %s', step, self.total, loss, rate,
                 time.strftime('%H:%M:%S', time.gmtime(eta)))
    self._last_step, self._last_time = step, now
    return {'steps_per_sec': rate}
