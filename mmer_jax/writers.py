"""Where a run's numbers go: TensorBoard event files (tensorboardX, no TensorFlow), a JSONL file,
and on the log what a stage is doing: a progress line (step, loss, steps/s, ETA of the stage and
the run) and a heartbeat that keeps the log from falling silent for more than 30 s.

(clu's metric_writers import TensorFlow at package import time, so they are not used here.)
With several processes (`jax.distributed`), only process 0 writes the files (`for_process`);
every process still logs its progress line.
"""

from __future__ import annotations

import json
import os
import threading
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


def duration(seconds: float) -> str:
  """`HH:MM:SS`, with a day count in front past 24 hours (`2d 03:04:05`)."""
  seconds = int(round(max(seconds, 0.0)))
  days, rest = divmod(seconds, 86400)
  clock = f'{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}'
  return f'{days}d {clock}' if days else clock


class Progress:
  """What a stage is doing, on the log, at least every `every_s` seconds of wall time.

  `step(step, loss)` after each train step logs, after the first, `<first_step> took N s` (where
  set: the compilation, timed from the last activity), and the progress line (`step/total loss
  steps/s ETA`, with the run's ETA where later stages follow) when `every_steps` steps or `every_s` seconds
  have passed since the last line. `activity(what)` logs what happens next (loading the data,
  compiling the train step, validating, a row of the test grid). A daemon thread (`start`) logs
  the progress line of the latest step, or `still <activity> (time)` when no step finished,
  whenever nothing was logged for `every_s` seconds: a compilation, a slow step or a long
  evaluation never leaves the log silent, and a hung step is named. `later_steps`: the steps of the
  stages after this one (an estimate: `train._later_steps`), timed at this stage's step rate;
  `at_most`: early stopping may end the stage sooner, so the ETA reads `ETA <= ...`.
  """

  def __init__(self, total_steps: int, start_step: int = 0, *, every_steps: int | None = None,
               every_s: float | None = 30.0, later_steps: int = 0, name: str = '',
               at_most: bool = False, first_step: str | None = None):
    self.total, self.every_steps, self.every_s = total_steps, every_steps, every_s
    self.at_most = at_most  # early stopping may end the stage sooner: the ETA is a bound
    self.later_steps, self.prefix = later_steps, f'{name}: ' if name else ''
    now = time.perf_counter()
    self._last_step, self._last_time, self._last_line = start_step, now, now
    self._activity, self._since = 'starting', now
    self.steps_per_sec = 0.0
    self._latest = (start_step, float('nan'))  # the last finished step and its loss
    self.first_step = first_step  # what the first step does, logged with its time once it ends
    self._lock = threading.RLock()
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # -- lines --------------------------------------------------------------------------------------

  def _log(self, fmt: str, *args) -> None:
    with self._lock:
      self._last_line = time.perf_counter()
      logging.info(self.prefix + fmt, *args)

  def activity(self, what: str, log: bool = True) -> float:
    """Logs `what` happens next (`log=False`: only the heartbeat will name it, once it has taken
    `every_s`); returns the seconds the previous activity took."""
    now = time.perf_counter()
    took = now - self._since
    with self._lock:
      self._activity, self._since = what, now
    if log:
      self._log('%s', what)
    return took

  def seconds(self) -> float:
    """Seconds since the current activity began."""
    return time.perf_counter() - self._since

  def reset_window(self, step: int) -> None:
    """Starts the steps/s window at `step` now (after a compilation, a restore)."""
    with self._lock:
      self._last_step, self._last_time = step, time.perf_counter()
      self._latest = (step, self._latest[1])

  def resume_training(self, step: int) -> None:
    """Back to training after a validation: its time leaves the steps/s window."""
    self.reset_window(step)
    with self._lock:
      self._activity, self._since = f'training (step {step + 1})', self._last_time

  def done(self, what: str) -> float:
    """Logs that the current activity finished (`what took N s`); returns its seconds."""
    took = time.perf_counter() - self._since
    self._log('%s took %.1f s', what, took)
    return took

  def due(self, step: int) -> bool:
    """Whether `step` gets a progress line (`every_steps` steps, or `every_s` seconds, passed)."""
    if step >= self.total or (self.every_steps and step % self.every_steps == 0):
      return True
    return self.every_s is not None and time.perf_counter() - self._last_line >= self.every_s

  def __call__(self, step: int, loss: float) -> dict:
    """Logs the progress line of `step` now; returns {'steps_per_sec': rate since the last line}."""
    with self._lock:
      now = time.perf_counter()
      if step > self._last_step:
        self.steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
      rate = max(self.steps_per_sec, 1e-9)
      eta = (self.total - step) / rate
      run_eta = f' (run {duration(eta + self.later_steps / rate)})' if self.later_steps else ''
      self._last_step, self._last_time = step, now
      self._log('step %d/%d  loss %.4f  %.2f steps/s  ETA %s%s%s', step, self.total, loss,
                self.steps_per_sec, '<= ' if self.at_most else '', duration(eta), run_eta)
      return {'steps_per_sec': self.steps_per_sec}

  def step(self, step: int, loss: float) -> dict | None:
    """After a train step: the progress line if it is due (`__call__`'s dict), else None. The
    first step's `first_step` line says how long it took since the last activity began (the
    compilation), and the steps/s window starts after it. The heartbeat logs the latest step's
    line itself when a step outlasts the interval."""
    if self.first_step is not None:
      self.done(self.first_step)
      self.first_step = None
      self.reset_window(step)
    with self._lock:
      self._latest = (step, loss)
      self._activity, self._since = f'training (step {step + 1})', time.perf_counter()
    return self(step, loss) if self.due(step) else None

  # -- the heartbeat --------------------------------------------------------------------------------

  def start(self) -> 'Progress':
    """Starts the heartbeat thread (no-op without `every_s`)."""
    if self.every_s is not None and self._thread is None:
      self._thread = threading.Thread(target=self._beat, name='progress-heartbeat', daemon=True)
      self._thread.start()
    return self

  def _beat(self) -> None:
    while not self._stop.wait(min(self.every_s, 1.0)):
      now = time.perf_counter()
      with self._lock:
        if now - self._last_line < self.every_s:
          continue
        step, loss = self._latest
        if step > self._last_step:  # steps finished since the last line: their progress line
          self(step, loss)
        else:
          self._log('still %s (%s)', self._activity, duration(now - self._since))

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None

  def __enter__(self) -> 'Progress':
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()
