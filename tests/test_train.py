"""Tests for train.py: a `Run`'s steps and epochs (whole runs: test_resume.py, test_configs.py)."""

import numpy as np

from mmer_jax import train


def test_the_run_maps_steps_to_epochs_of_different_lengths(grouped_toy_config):
  run = train.Run(grouped_toy_config)
  sizes = run.streams.epoch_sizes(grouped_toy_config.train.num_epochs)
  assert run.num_steps == sum(sizes)
  ends = np.cumsum(sizes)
  assert run.epoch_position(0) == (0, 0)
  assert run.epoch_position(int(ends[0])) == (1, 0)
  assert run.epoch_position(int(ends[0]) + 1) == (1, 1)
  assert run.is_epoch_end(int(ends[1])) and not run.is_epoch_end(int(ends[1]) - 1)
  assert run.epochs_done(int(ends[1])) == 2 and run.epochs_done(int(ends[1]) + 1) == 3
