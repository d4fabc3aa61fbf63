"""The features-table launcher's pure parts: aggregation over seeds, the markdown table, and the
commands it runs (IMDer's row is the config's `cpu` variant)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / 'launch' / 'features_table.py'
_SPEC = importlib.util.spec_from_file_location('features_table', _PATH)
features_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(features_table)


def _run(wa: dict[str, float], n: int = 60) -> dict:
  return {'rows': [{'condition': c, 'metrics': {'wa': v, 'ua': v - 0.1}, 'num_samples': n}
                   for c, v in wa.items()]}


def test_aggregate_means_and_sample_stds_over_seeds():
  runs = [_run({'full': 0.8, 'a': 0.4}), _run({'full': 0.7, 'a': 0.5}), _run({'full': 0.9, 'a': 0.6})]
  table = features_table.aggregate({'late_fusion': runs})
  cell = table['late_fusion']['full']
  assert cell['wa'] == pytest.approx([0.8, np.std([0.8, 0.7, 0.9], ddof=1)])
  assert cell['ua'][0] == pytest.approx(0.7) and cell['n'] == 60
  assert list(table['late_fusion']) == ['full', 'a']
  single = features_table.aggregate({'x': [_run({'full': 0.8})]})
  assert single['x']['full']['wa'] == [pytest.approx(0.8), 0.0]


def test_markdown_has_one_line_per_row_and_a_column_per_condition():
  table = features_table.aggregate({'late_fusion': [_run({'full': 0.8, 'a': 0.4})] * 2,
                                    'mmin': [_run({'full': 0.6, 'a': 0.3})] * 2})
  lines = features_table.markdown(table, ['0', '1']).strip().splitlines()
  assert lines[2] == '| row | full | a |'
  assert lines[4] == '| late_fusion | 0.800 ± 0.000 | 0.400 ± 0.000 |'
  assert lines[5].startswith('| mmin | 0.600')
  assert set(features_table.ROWS) >= {'late_fusion', 'early_fusion', 'late_fusion_augmented',
                                      'early_fusion_augmented', 'mmin'}


def test_imder_row_runs_the_cpu_variant(tmp_path, monkeypatch):
  commands = []

  def run(command, check):
    assert check
    commands.append(command)
    workdir = pathlib.Path(next(a for a in command if a.startswith('--workdir=')).split('=', 1)[1])
    workdir.mkdir(parents=True)
    (workdir / 'results.json').write_text(json.dumps(_run({'full': 0.8})))
  monkeypatch.setattr(features_table.subprocess, 'run', run)
  features_table.train(str(tmp_path), 'imder', '0', features_dir='DIR', uneven='a:0.1,v:0.5')
  (command,) = commands
  assert '--config=configs/imder_mosi.py:cpu' in command
  assert "--config.train.valid_conditions=('a', 'v')" in command
  assert not [a for a in command if a.startswith('--config.method.')]  # no copy of the settings
  sys.path.insert(0, str(_PATH.parents[1]))
  from configs import imder_mosi  # pylint: disable=g-import-not-at-top
  config = imder_mosi.get_config('cpu')  # what the row trains, before its valid_conditions
  assert config.method.score_channels == (32, 64) and config.method.sampler == 'dpm_solver'
