"""writers.py: atomic writes, the progress line's cadence and ETA, the heartbeat, and what a
training run's log says while a slowed step trains."""

from __future__ import annotations

import logging
import time

import pytest

from configs import fusion_features
from mmer_jax import steps
from mmer_jax import train
from mmer_jax import writers
import toy_data


@pytest.fixture
def lines(caplog):
  """The project's own log records at INFO (not orbax's): [(time, message)]."""
  caplog.set_level(logging.INFO, logger='absl')
  return lambda: [(r.created, r.getMessage()) for r in caplog.records
                  if r.name == 'absl' and r.pathname.split('mmer_jax')[-1] != r.pathname]


def test_duration_formats_hours_and_days():
  assert writers.duration(0) == '00:00:00'
  assert writers.duration(3725.4) == '01:02:05'
  assert writers.duration(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == '2d 03:04:05'
  assert writers.duration(-3) == '00:00:00'


def test_write_atomic_replaces_whole_files(tmp_path):
  path = str(tmp_path / 'a.txt')
  writers.write_atomic(path, 'one')
  writers.write_atomic(path, 'two')
  assert open(path, encoding='utf-8').read() == 'two'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt']


def test_progress_line_every_n_steps_and_on_the_last(lines):
  progress = writers.Progress(10, every_steps=4, every_s=None)
  logged = [s for s in range(1, 11) if progress.step(s, 1.0) is not None]
  assert logged == [4, 8, 10]
  assert [m for _, m in lines()][0].startswith('step 4/10  loss 1.0000')


def test_progress_eta_of_the_stage_and_the_run(lines):
  progress = writers.Progress(100, every_steps=10, every_s=None, later_steps=300, name='stage s1')
  progress.reset_window(0)
  progress._last_time -= 10.0  # pylint: disable=protected-access  (10 steps took 10 s: 1 step/s)
  rate = progress(10, 0.5)
  assert rate['steps_per_sec'] == pytest.approx(1.0, rel=0.01)
  (_, message), = lines()
  # 90 steps left at 1 step/s: 00:01:30; the run adds the 300 later steps: 00:06:30.
  assert message.startswith('stage s1: step 10/100  loss 0.5000  1.00 steps/s  ETA 00:01:30')
  assert message.endswith('(run 00:06:30)')


def test_progress_eta_is_a_bound_under_early_stopping(lines):
  progress = writers.Progress(100, every_s=None, at_most=True)
  progress(10, 0.5)
  assert ' ETA <= ' in lines()[-1][1]


def test_progress_line_every_few_seconds_whatever_the_step_cadence(lines):
  progress = writers.Progress(10**6, every_steps=10**6, every_s=0.3)
  start = time.perf_counter()
  step = 0
  while time.perf_counter() - start < 1.6:
    time.sleep(0.05)
    step += 1
    progress.step(step, 0.0)
  times = [t for t, m in lines() if m.startswith('step ')]
  assert len(times) >= 3
  # Each line comes at the first step after 0.3 s (steps of 0.05 s), with slack for a loaded machine.
  assert max(b - a for a, b in zip(times, times[1:])) < 0.3 + 0.05 + 0.6


def test_heartbeat_names_what_runs_when_nothing_is_logged(lines):
  with writers.Progress(10, every_steps=1, every_s=0.2) as progress:
    progress.activity('compiling the train step')
    time.sleep(1.2)
    progress.step(1, 2.0)
  messages = [m for _, m in lines()]
  still = [m for m in messages if m.startswith('still compiling the train step')]
  assert len(still) >= 2, messages
  assert messages.index('compiling the train step') < messages.index(still[0])
  # After the step the heartbeat speaks of training, and it stops with the context.
  count = len(lines())
  time.sleep(0.4)
  assert len(lines()) == count


def test_a_slowed_training_run_logs_at_least_every_interval(tmp_path, lines, monkeypatch):
  """A run whose train step takes 0.25 s and whose step cadence never comes (log_every_steps
  large): a line within seconds of the start, then a line at least every `log_every_seconds`
  (here 1 s, 30 s by default) through data loading, compilation, training, validation and
  the test grid, whose rows are named. Initialisation is slowed to 2.5 s with nothing else to log:
  without the heartbeat the gap would be that long."""
  original = steps.compile_steps

  def slowed(*args, **kwargs):
    train_step, eval_step, place = original(*args, **kwargs)

    def slow_step(state, batch):
      time.sleep(0.25)
      return train_step(state, batch)
    return slow_step, eval_step, place
  monkeypatch.setattr(steps, 'compile_steps', slowed)
  init_state = train.Run.init_state

  def slow_init(self):  # a silent phase longer than two intervals on any machine
    time.sleep(2.5)
    return init_state(self)
  monkeypatch.setattr(train.Run, 'init_state', slow_init)
  config = fusion_features.get_config()
  config.data.features_dir = str(toy_data.write_features_dir(tmp_path / 'toy', n=60))
  config.data.batch_size = config.data.eval_batch_size = 6
  config.train.num_epochs = 3  # 18 steps of >= 0.25 s: >= 4.5 s of training on any machine
  config.train.log_every_steps = 10**6
  config.train.log_every_seconds = 1.0
  config.eval.rates = (0.2,)
  start = time.time()
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  end = time.time()
  records = lines()
  assert records[0][0] - start < 10.0
  messages = [m for _, m in records]
  assert any(m.startswith('loading ') for m in messages)
  assert any('compiling the train step' in m for m in messages)
  assert any(m.startswith('compiling and running the first train step took') for m in messages)
  assert sum(m.startswith("step ") for m in messages) >= 3, "\n".join(f"{t - start:.2f} {m}" for t, m in records)
  assert 'test grid row 5/5: rate=0.2' in messages  # full, a, t, at (the toy has no visual)
  times = [start] + [t for t, _ in records] + [end]
  gaps = [b - a for a, b in zip(times, times[1:])]
  # 1 s, plus one slowed step (a time-based line is checked after each step), plus slack for a
  # loaded machine (test workers in parallel: a thread may wake a second late).
  assert max(gaps) < 1.0 + 0.25 + 2.0, max(zip(gaps, messages + ['end']))
  # The slowed initialisation was named while it ran (other phases may be too quick to be).
  assert sum(m.startswith('still initialising') for m in messages) >= 2, messages
