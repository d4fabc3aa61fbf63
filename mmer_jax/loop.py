"""The training loop, written once for S members trained in lock step (docs/training.md#the-loop).

`train.py` drives it with one member (jit or pmap, several hosts), `sweep.py` with the S members
of a vmapped group. A `Driver` steps, validates and checkpoints the members; the loop keeps each
member's selection record (`Member`) with the run's semantics: the best validation metric's
checkpoint written at each improvement, early stopping after `train.patience` epochs, a
non-finite loss stops that member (recorded, reported; the others go on), and a stopped member
no longer logs. Nothing is saved once every member has stopped on a non-finite loss, so a
diverged state never becomes a single run's latest checkpoint. A signal (`preemption.py`) ends
the loop after the step in flight, with its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Protocol, Sequence

from absl import logging
import ml_collections
import numpy as np

from mmer_jax import diagnostics
from mmer_jax import metrics as metrics_lib
from mmer_jax import parallel
from mmer_jax import preemption
from mmer_jax import writers

DEFAULT_SELECT = {'classification': 'valid/ua', 'regression': 'valid/mae'}
LOWER_IS_BETTER = ('mae', 'loss')
FIRST_STEP = 'compiling and running the first train step'  # logged with its time (writers.Progress)
DIVERGED_FILE = 'diverged.json'  # in a diverged member's workdir: its message and step


def selection(config: ml_collections.ConfigDict, spec) -> tuple[str, str]:
  """(metric, mode) of model selection: `train.select_metric` / `select_mode`, or, when unset, the
  task's default (valid/ua for classification, valid/mae for regression) and the metric's
  direction. A metric the task does not compute is an error before any training."""
  metric = config.train.select_metric or DEFAULT_SELECT[spec.task]
  keys = metrics_lib.CLASSIFICATION_KEYS if spec.task == 'classification' else metrics_lib.REGRESSION_KEYS
  names = [f'valid/{k}' for k in keys]
  if metric not in names:
    raise ValueError(f'train.select_metric={metric!r} is not a validation metric of this '
                     f'{spec.task} dataset ({spec.name}); expected one of {names}, or leave it '
                     f'unset for {DEFAULT_SELECT[spec.task]}')
  mode = config.train.select_mode or ('min' if metric.split('/')[-1] in LOWER_IS_BETTER else 'max')
  if mode not in ('min', 'max'):
    raise ValueError(f"train.select_mode: expected 'min' or 'max', got {mode!r}")
  return metric, mode


@dataclasses.dataclass
class Member:
  """One member's selection record, saved with each checkpoint (its `meta`)."""
  best_metric: float | None = None
  best_step: int | None = None
  best_epoch: int | None = None
  epoch_done: int = 0
  stopped: bool = False  # patience spent or diverged: no more selection, logging or validation
  diverged: str | None = None  # the non-finite loss's message
  warnings: list[str] = dataclasses.field(default_factory=list)  # the first of each kind

  @classmethod
  def from_meta(cls, meta: dict | None, patience: int | None = None) -> Member:
    fields = {f.name for f in dataclasses.fields(cls)}
    member = cls(**{k: v for k, v in (meta or {}).items() if k in fields})
    member.warnings = list(member.warnings)
    member.stopped = member.stopped or member.patience_spent(patience)
    return member

  def meta(self) -> dict:
    return dataclasses.asdict(self)

  def warn(self, kind: str, message: str, name: str = '') -> None:
    logging.warning('%s%s', _prefix(name), message)
    if not any(w.startswith(kind) for w in self.warnings):
      self.warnings.append(f'{kind}: {message}')

  def patience_spent(self, patience: int | None) -> bool:
    """`patience` evaluated epochs have passed without a better valid metric."""
    return bool(patience) and self.best_epoch is not None and (
        self.epoch_done - self.best_epoch >= patience)

  def improves(self, value: float, mode: str) -> bool:
    if self.best_metric is None:
      return True
    return value > self.best_metric if mode == 'max' else value < self.best_metric


class Driver(Protocol):
  """What the loop needs of S members trained together (`train.RunDriver`, `sweep.SweepDriver`)."""
  config: ml_collections.ConfigDict  # the members' shared training fields and selection
  spec: Any
  names: Sequence[str]  # for log lines ('' for a single run)
  member_dirs: Sequence[str]
  num_steps: int
  valid_conditions: Sequence[str]

  def describe(self) -> str: ...  # the training's shape, for the progress line
  def epoch_position(self, step: int) -> tuple[int, int]: ...
  def epochs_done(self, step: int) -> int: ...
  def is_epoch_end(self, step: int) -> bool: ...
  def batches(self, epoch: int, start: int) -> Iterable[Any]: ...
  def train_step(self, state, batch) -> tuple[Any, dict[str, np.ndarray]]:
    """The stepped state and each metric as a host array [S]."""
  def validate(self, state) -> list[tuple[dict, tuple]]:
    """Per member (valid metrics without the prefix, (outputs, labels, mask) pooled)."""
  def save_best(self, i: int, step: int, state, member: Member) -> None:
    """Member i's parameters of the last `validate` as its best checkpoint."""
  def save_latest(self, step: int, state, members: Sequence[Member]) -> None: ...


def train_members(driver: Driver, state, step: int, members: list[Member], *,
                  progress: writers.Progress, metric_writers: Sequence[Any]):
  """Trains from `step` to `driver.num_steps` or until every member stopped; returns the state."""
  tc = driver.config.train
  select, mode = selection(driver.config, driver.spec)
  size = len(members)
  active = lambda: [i for i in range(size) if not members[i].stopped]  # noqa: E731
  if step < driver.num_steps and active():
    progress.activity(f'training steps {step + 1}-{driver.num_steps} ({driver.describe()}); '
                      'compiling the train step')
  while step < driver.num_steps and active():
    epoch, start = driver.epoch_position(step)
    for batch in driver.batches(epoch, start):
      state, metrics = driver.train_step(state, batch)
      step += 1
      # Before anything is saved: a member's non-finite loss stops it.
      for i in active():
        loss = float(metrics['loss'][i])
        try:
          message = diagnostics.check_loss(loss, step, bound=tc.get('loss_bound'),
                                           workdir=driver.member_dirs[i])
        except diagnostics.TrainingDiverged as e:
          members[i].diverged, members[i].stopped = str(e), True
          members[i].warn('diverged', str(e), driver.names[i])
          continue
        if message:
          members[i].warn('loss_bound', message, driver.names[i])
      training = active()
      if not training:
        break
      progress.step(step, float(np.mean([metrics['loss'][i] for i in training])))
      if step % tc.log_every_steps == 0 or step == driver.num_steps:
        for i in training:
          metric_writers[i].write_scalars(step, {f'train/{k}': v[i] for k, v in metrics.items()}
                                          | {'steps_per_sec': progress.steps_per_sec})
      end_of_epoch = driver.is_epoch_end(step)
      if preemption.requested() and not end_of_epoch:  # an epoch's end validates first
        driver.save_latest(step, state, members)
        raise preemption.Preempted(f'stopped on a signal at step {step}: resume by running the '
                                   'same command again')
      if step % tc.checkpoint_every_steps == 0 and not end_of_epoch:
        driver.save_latest(step, state, members)
      if step >= driver.num_steps:
        break
    if not active():
      break
    epoch_done = driver.epochs_done(step)
    if epoch_done % tc.eval_every_epochs == 0 or step == driver.num_steps:
      progress.activity(f'validating after epoch {epoch_done} '
                        f'(conditions {", ".join(driver.valid_conditions)})', log=False)
      validated = driver.validate(state)
      for i in active():
        valid, pooled = validated[i]
        valid = {f'valid/{k}': v for k, v in valid.items()}
        metric_writers[i].write_scalars(step, valid)
        logging.info('%sepoch %d valid %s (%.1f s)', _prefix(driver.names[i]), epoch_done,
                     {k: round(v, 4) for k, v in valid.items()}, progress.seconds())
        collapse = diagnostics.prediction_collapse(driver.spec.task, *pooled)
        if collapse:
          members[i].warn('collapse', f'epoch {epoch_done}: {collapse}', driver.names[i])
        if members[i].improves(valid[select], mode):
          members[i].best_metric, members[i].best_step = float(valid[select]), step
          members[i].best_epoch = epoch_done
          driver.save_best(i, step, state, members[i])
    for i in active():
      members[i].epoch_done = epoch_done
      if members[i].patience_spent(tc.get('patience')):
        members[i].stopped = True
        logging.info('%searly stopping after epoch %d: no better %s since epoch %d',
                     _prefix(driver.names[i]), epoch_done, select, members[i].best_epoch)
    driver.save_latest(step, state, members)
    if preemption.requested() and step < driver.num_steps:
      raise preemption.Preempted(f'stopped on a signal at step {step} (an epoch\'s end): resume '
                                 'by running the same command again')
    progress.resume_training(step)
  return state


def _prefix(name: str) -> str:
  return f'member {name}: ' if name else ''


def write_diverged(workdir: str, member: Member) -> None:
  """`<workdir>/diverged.json`: why a member has no results (its message and best step)."""
  if parallel.is_main_process():
    os.makedirs(workdir, exist_ok=True)
    writers.write_atomic(os.path.join(workdir, DIVERGED_FILE),
                         json.dumps({'diverged': member.diverged, 'best_step': member.best_step,
                                     'warnings': member.warnings}, indent=1))


def read_diverged(workdir: str) -> str | None:
  path = os.path.join(workdir, DIVERGED_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)['diverged']
