"""The M3ER table launcher: its commands (trained and re-evaluated rows), linked checkpoints,
the table and the paired orderings, on fake runs."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / 'launch' / 'm3er_table.py'
_SPEC = importlib.util.spec_from_file_location('m3er_table', _PATH)
m3er_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(m3er_table)


def _results(base: float) -> dict:
  rows = [{'condition': c, 'metrics': {'weighted_f1': base - i / 10, 'wa': base - i / 20,
                                       'mean_ovr_accuracy': 0.8 - i / 50}}
          for i, c in enumerate(m3er_table.CONDITIONS)]
  return {'rows': rows + [{'condition': 'a', 'metrics': {'weighted_f1': 0.1}}]}


def test_commands_train_two_rows_and_reevaluate_the_rest():
  cmd = m3er_table.command('/r', 'm3er', '1', dataset='iemocap_4', data_root='/d')
  assert cmd[1:4] == ['-m', 'mmer_jax.main', '--config=configs/m3er_iemocap.py:synthetic']
  assert '--mode=evaluate' not in cmd and '--config.method.variant=m3er' in cmd
  assert '--workdir=/r/m3er_seed1' in cmd and '--config.seed=1' in cmd
  cmd = m3er_table.command('/r', 'no_proxy_paper_check', '0', dataset='ravdess_av', data_root='/d')
  assert '--mode=evaluate' in cmd and '--config.method.variant=no_proxy' in cmd
  assert cmd[-1] == '--config.method.check_statistic=correlation'  # the row's own, last
  assert '--config.data.features_dir=/d/ravdess_av' in cmd
  trained = {r for r, (_, source, _) in m3er_table.ROW_SPECS.items() if source is None}
  assert trained == {'original_mult', 'm3er'}


def test_a_reevaluated_row_links_the_trained_rows_checkpoints(tmp_path, monkeypatch):
  calls = []

  def fake_run(cmd, check):
    assert check
    workdir = next(a.split('=', 1)[1] for a in cmd if a.startswith('--workdir='))
    calls.append(os.path.basename(workdir))
    os.makedirs(os.path.join(workdir, 'checkpoints'), exist_ok=True)
    if '--mode=evaluate' not in cmd:
      pathlib.Path(workdir, 'feature_stats.json').write_text('{}')
    with open(os.path.join(workdir, 'results.json'), 'w', encoding='utf-8') as f:
      json.dump(_results(0.7), f)
  monkeypatch.setattr(m3er_table.subprocess, 'run', fake_run)
  m3er_table.run(str(tmp_path), 'no_proxy', '0', dataset='iemocap_4', data_root='/d')
  assert calls == ['m3er_seed0', 'no_proxy_seed0']
  link = tmp_path / 'no_proxy_seed0' / 'checkpoints'
  assert link.is_symlink() and os.path.samefile(link, tmp_path / 'm3er_seed0' / 'checkpoints')
  stats = tmp_path / 'no_proxy_seed0' / 'feature_stats.json'  # the standardisation it was trained with
  assert stats.is_symlink() and os.path.samefile(stats, tmp_path / 'm3er_seed0' / 'feature_stats.json')
  m3er_table.run(str(tmp_path), 'no_check_no_proxy', '0', dataset='iemocap_4', data_root='/d')
  assert calls[-1] == 'no_check_no_proxy_seed0'  # m3er is not trained again


def test_table_means_and_paired_orderings():
  per_seed = {'m3er': [m3er_table.scores(_results(b)) for b in (0.70, 0.72, 0.71)],
              'no_proxy': [m3er_table.scores(_results(b)) for b in (0.68, 0.71, 0.69)]}
  table = m3er_table.make_table(per_seed, ['0', '1', '2'])
  mean, std = table['rows']['m3er']['full']['weighted_f1']
  assert mean == pytest.approx(0.71) and std == pytest.approx(0.01)
  order = [o for o in table['orderings'] if o['condition'] == 'full' and o['metric'] == 'weighted_f1']
  assert len(order) == 1 and order[0]['better'] == 'm3er'
  diff = np.array([0.02, 0.01, 0.02])
  assert order[0]['mean_diff'] == pytest.approx(diff.mean())
  assert order[0]['t'] == pytest.approx(diff.mean() / (diff.std(ddof=1) / np.sqrt(3)))
  assert order[0]['seeds_held'] == 3 and order[0]['holds']
  text = m3er_table.markdown(table, 'M3ER')
  assert '| m3er | 71.0 ± 1.0 |' in text and 'm3er > no_proxy' in text


def test_missing_noise_rows_are_an_error():
  with pytest.raises(ValueError, match='noise'):
    m3er_table.scores({'rows': [{'condition': 'full', 'metrics': {}}]})
