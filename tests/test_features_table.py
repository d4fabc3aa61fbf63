"""The features-table launcher's pure parts: aggregation over seeds and the markdown table."""

from __future__ import annotations

import importlib.util
import pathlib

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
