"""The MMGCN table launcher on fake runs: commands, shared workdirs, scores and paired orderings."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

from absl import flags
import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / 'launch' / 'mmgcn_table.py'
_SPEC = importlib.util.spec_from_file_location('mmgcn_table', _PATH)
mmgcn_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mmgcn_table)

CONFIG = 'configs/mmgcn_iemocap.py:synthetic'
SEEDS = ['0', '1', '2']
# Fake test scores of the `full` condition, per row and seed: (wa, ua, weighted_f1).
FAKE = {
    'avt': [(0.60, 0.55, 0.59), (0.62, 0.56, 0.61), (0.61, 0.57, 0.60)],
    'at': [(0.58, 0.54, 0.57), (0.61, 0.55, 0.58), (0.57, 0.53, 0.59)],
    'vt': [(0.59, 0.52, 0.58), (0.60, 0.54, 0.60), (0.62, 0.55, 0.59)],
    't': [(0.55, 0.50, 0.54), (0.57, 0.51, 0.55), (0.56, 0.52, 0.56)],
    'no_speaker': [(0.61, 0.54, 0.60), (0.63, 0.55, 0.60), (0.60, 0.56, 0.62)],
    'depth1': [(0.57, 0.52, 0.56), (0.58, 0.53, 0.57), (0.59, 0.54, 0.58)],
    'depth64': [(0.50, 0.45, 0.49), (0.52, 0.47, 0.51), (0.55, 0.48, 0.53)],
    'early_fusion': [(0.60, 0.54, 0.58), (0.60, 0.55, 0.60), (0.60, 0.56, 0.59)],
}


def _results(seed: str, wa: float, ua: float, wf1: float, **extra) -> dict:
  """results.json as mmer_jax.train writes it: the full grid, `full` among other conditions."""
  rows = [{'condition': 'full', 'metrics': {'wa': wa, 'ua': ua, 'weighted_f1': wf1, 'macro_f1': wf1 - 0.05},
           'num_samples': 1623, 'missing_fraction': {'audio': 0.0, 'visual': 0.0, 'text': 0.0}}]
  for i, c in enumerate(('a', 'v', 't', 'av', 'at', 'vt', 'rate=0.0', 'rate=0.5')):
    rows.append({'condition': c, 'metrics': {'wa': 0.1 + i / 100, 'ua': 0.1, 'weighted_f1': 0.1,
                                             'macro_f1': 0.1},
                 'num_samples': 1623, 'missing_fraction': {'audio': 0.5, 'visual': 0.5, 'text': 0.5}})
  return {'method': 'mmgcn', 'dataset': 'synthetic/iemocap_6', 'split': 'test', 'seed': int(seed),
          'rows': rows, 'task': 'classification', 'train_missing': 'none', 'selected_step': 120,
          'selected_on': 'valid/weighted_f1', 'valid_conditions': ['full'], 'valid_weighted_f1': 0.6,
          'standardized': True, **extra}


def _write_runs(root: pathlib.Path, fake: dict, **extra) -> None:
  for row, scores in fake.items():
    for seed, values in zip(SEEDS, scores):
      run = root / f'{row}_seed{seed}'
      run.mkdir(parents=True, exist_ok=True)
      (run / 'results.json').write_text(json.dumps(_results(seed, *values, **extra)))


@pytest.fixture
def no_training(monkeypatch):
  def fail(cmd, **kwargs):
    raise AssertionError(f'trained: {cmd}')
  monkeypatch.setattr(mmgcn_table.subprocess, 'run', fail)


def _column(row: str, i: int) -> np.ndarray:
  return np.array([s[i] for s in FAKE[row]])


def test_each_row_command_has_exactly_its_overrides():
  root = '/runs/t'
  expected = {'a': ['--config.method.modalities=a'], 'v': ['--config.method.modalities=v'],
              't': ['--config.method.modalities=t'], 'at': ['--config.method.modalities=at'],
              'vt': ['--config.method.modalities=vt'], 'avt': ['--config.method.modalities=avt'],
              'depth1': ['--config.method.num_layers=1'], 'depth2': ['--config.method.num_layers=2'],
              'depth4': ['--config.method.modalities=avt'],  # avt's run
              'depth8': ['--config.method.num_layers=8'], 'depth16': ['--config.method.num_layers=16'],
              'depth32': ['--config.method.num_layers=32'], 'depth64': ['--config.method.num_layers=64'],
              'no_speaker': ['--config.method.speaker_nodes=none'],
              'early_fusion': ['--config.method.fusion=early'],
              'late_fusion': ['--config.method.fusion=late'],
              'gated_attention': ['--config.method.fusion=gated']}
  assert list(mmgcn_table.ROWS) == list(expected)  # the table order
  extra = ['--config.train.num_epochs=5']
  for row, own in expected.items():
    seed = '1'
    workdir = f'{root}/{"avt" if row == "depth4" else row}_seed{seed}'
    cmd = mmgcn_table.command(root, row, seed, config=CONFIG, overrides=extra, depth=4)
    # The row's own overrides last: they win over --override.
    assert cmd == [sys.executable, '-m', 'mmer_jax.main', f'--config={CONFIG}', f'--workdir={workdir}',
                   '--config.seed=1', *extra, *own], row
  assert (mmgcn_table.run_dir(root, 'depth4', '2') == mmgcn_table.run_dir(root, 'avt', '2')
          == f'{root}/avt_seed2')


def test_the_shared_depth_is_the_one_avt_runs_at():
  assert mmgcn_table.avt_depth(CONFIG) == 4
  assert mmgcn_table.avt_depth('configs/mmgcn_iemocap.py:smoke') == 2
  assert mmgcn_table.avt_depth(CONFIG, ['--config.method.num_layers=16', '--config.method.num_layers=8']) == 8
  assert mmgcn_table.run_dir('r', 'depth8', '0', depth=8) == 'r/avt_seed0'
  assert mmgcn_table.run_dir('r', 'depth4', '0', depth=8) == 'r/depth4_seed0'
  cmd = mmgcn_table.command('r', 'depth4', '0', config=CONFIG, depth=8)
  assert cmd[-1] == '--config.method.num_layers=4' and cmd[4] == '--workdir=r/depth4_seed0'


def test_row_scores_read_the_test_full_condition():
  scores = mmgcn_table.row_scores(_results('0', 0.6, 0.5, 0.55))
  assert scores == {'wa': 0.6, 'ua': 0.5, 'weighted_f1': 0.55}
  assert mmgcn_table.row_scores(_results('0', 0.6, 0.5, 0.55, wall_clock_s=12.5))['wall_clock_s'] == 12.5
  with pytest.raises(ValueError, match='split'):
    mmgcn_table.row_scores({**_results('0', 0.6, 0.5, 0.55), 'split': 'valid'})


def test_table_of_fake_runs(tmp_path, no_training):
  _write_runs(tmp_path, FAKE)
  rows = ['avt', 'at', 'vt', 't', 'depth1', 'depth4', 'depth64', 'no_speaker', 'early_fusion']
  table = mmgcn_table.build_table(str(tmp_path), rows, SEEDS, config=CONFIG)  # depth from the config
  assert table['avt_depth'] == 4
  assert table['rows'] == ['t', 'at', 'vt', 'avt', 'depth1', 'depth4', 'depth64', 'no_speaker',
                           'early_fusion']  # table order
  assert table['runs']['depth4'] == table['runs']['avt'] == [str(tmp_path / f'avt_seed{s}') for s in SEEDS]
  assert table['overrides']['no_speaker'] == ['--config.method.speaker_nodes=none']
  for row in rows:
    real = 'avt' if row == 'depth4' else row
    for i, m in enumerate(('wa', 'ua', 'weighted_f1')):
      assert table['mean'][row][m] == pytest.approx(_column(real, i).mean())
      assert table['std'][row][m] == pytest.approx(_column(real, i).std(ddof=1))
  assert table['wall_clock_s'] == {}

  checks = {(o['better'], o['worse'], o['metric']): o for o in table['orderings']}
  # Pairs whose rows are not tabulated (a, v, late_fusion, gated_attention) are left out.
  assert set(checks) == {(b, w, m) for b, w in (('avt', 'at'), ('avt', 'vt'), ('avt', 't'), ('at', 't'),
                                                ('vt', 't'), ('avt', 'no_speaker'), ('avt', 'early_fusion'),
                                                ('depth4', 'depth64'))
                         for m in ('weighted_f1', 'wa')}
  assert [(o['better'], o['worse']) for o in table['orderings']][:2] == [('avt', 'at')] * 2
  for (better, worse, metric), o in checks.items():
    i = 2 if metric == 'weighted_f1' else 0
    diff = _column('avt' if better == 'depth4' else better, i) - _column(worse, i)
    std = diff.std(ddof=1)
    assert o['mean_diff'] == pytest.approx(diff.mean()) and o['std_diff'] == pytest.approx(std, abs=1e-12)
    assert o['seeds_held'] == int((diff > 0).sum()) and o['num_seeds'] == 3
    assert o['t_critical'] == pytest.approx(4.303) and o['holds'] == bool(diff.mean() > 0)
    if std < 1e-12:  # identical differences
      assert o['t'] is None and o['significant'] is None
      continue
    t = diff.mean() / (std / np.sqrt(3))
    assert o['t'] == pytest.approx(t) and o['significant'] == bool(abs(t) > 4.303)
  # Worked by hand: avt - at in weighted F1 is (0.02, 0.03, 0.01): mean 0.02, std 0.01, t 3.46.
  o = checks['avt', 'at', 'weighted_f1']
  assert (o['mean_diff'], o['std_diff'], o['t']) == pytest.approx((0.02, 0.01, 2 * np.sqrt(3)))
  assert (o['seeds_held'], o['significant'], o['holds']) == (3, False, True)
  # avt - t in WA is 0.05 in every seed: no spread, so no t (null) and no verdict.
  o = checks['avt', 't', 'wa']
  assert o['mean_diff'] == pytest.approx(0.05) and o['std_diff'] == pytest.approx(0.0, abs=1e-12)
  assert o['t'] is None and o['significant'] is None and o['seeds_held'] == 3
  # The speaker embedding hurts here: avt - no_speaker in weighted F1 is (-0.01, 0.01, -0.02).
  o = checks['avt', 'no_speaker', 'weighted_f1']
  assert o['mean_diff'] == pytest.approx(-0.02 / 3) and (o['seeds_held'], o['holds']) == (1, False)
  # depth4 (avt's runs) - depth64 in weighted F1: (0.10, 0.10, 0.07), t = 0.09 / (0.01732 / sqrt 3) = 9.0.
  o = checks['depth4', 'depth64', 'weighted_f1']
  assert o['t'] == pytest.approx(9.0) and o['significant'] and o['holds']
  assert table['best_depth']['weighted_f1'] == {'row': 'depth4', 'depth': 4, 'mean': pytest.approx(0.60),
                                                'paper': True, 'depth_rows': 3}

  claims = {(c['claim'], c['metric']): c for c in table['claims']}
  c = claims['MMGCN (avt) beats every modality subset', 'weighted_f1']
  assert (c['orderings'], c['held'], c['significant'], c['holds']) == (3, 3, 1, True)  # avt > t: t = 8.66
  c = claims['the speaker embedding helps', 'weighted_f1']
  assert (c['orderings'], c['held'], c['holds']) == (1, 0, False)
  c = claims['MMGCN beats the fusion baselines', 'wa']
  assert (c['orderings'], c['of_claim'], c['held'], c['significant'], c['holds']) == (1, 3, 1, 0, True)

  text = mmgcn_table.write(str(tmp_path), table)
  assert json.loads((tmp_path / 'table.json').read_text()) == json.loads(json.dumps(table))
  assert (tmp_path / 'table.md').read_text() == text
  assert '| avt | `modalities=avt` | 0.6100 ± 0.0100 | 0.5600 ± 0.0100 | 0.6000 ± 0.0100 |' in text
  assert '| depth4 | `num_layers=4` (avt\'s runs) | 0.6100 ± 0.0100 |' in text
  assert '| no_speaker | `speaker_nodes=none` | 0.6133 ± 0.0153 |' in text
  assert 'wall-clock' not in text
  assert '| avt > at | weighted F1 | +2.00 ± 1.00 | 3/3 | 3.46 | 4.30 | no | yes |' in text
  assert '| avt > t | WA | +5.00 ± 0.00 | 3/3 | n/a | 4.30 | n/a | yes |' in text
  assert '| depth4 > depth64 | weighted F1 | +9.00 ± 1.73 | 3/3 | 9.00 | 4.30 | yes | yes |' in text
  assert "## Which of the paper's orderings hold" in text
  assert ('- MMGCN (avt) beats every modality subset (weighted F1): holds; 3/3 orderings hold on the '
          'mean, 1/3 significantly') in text
  assert '- the speaker embedding helps (weighted F1): does not hold; 0/1 orderings hold' in text
  assert ('- MMGCN beats the fusion baselines (WA): holds; 1/1 orderings hold on the mean, 0/1 '
          'significantly (only 1 of its 3 orderings tabulated)') in text
  assert ('- the best depth is 4 layers (weighted F1): holds (best: depth4, only 3 of the 7 depth rows '
          'tabulated)') in text


def test_rows_subset_resume_and_training_commands(tmp_path, monkeypatch):
  _write_runs(tmp_path, {'avt': FAKE['avt']})
  calls = []

  def fake_run(cmd, check):
    assert check
    calls.append(cmd)
    workdir = pathlib.Path(next(a for a in cmd if a.startswith('--workdir=')).split('=', 1)[1])
    seed = next(a for a in cmd if a.startswith('--config.seed=')).split('=', 1)[1]
    workdir.mkdir(parents=True)
    results = _results(seed, 0.5, 0.4, 0.45, wall_clock_s=10.0 + int(seed))
    (workdir / 'results.json').write_text(json.dumps(results))

  monkeypatch.setattr(mmgcn_table.subprocess, 'run', fake_run)
  values = mmgcn_table.define_flags(flags.FlagValues())
  values(['mmgcn_table', f'--workdir={tmp_path}', '--rows=gated_attention,depth4', '--seeds=0,1',
          '--override=--config.train.num_epochs=3'])
  mmgcn_table.main([], values)
  # depth4 is avt's finished runs: only gated_attention trains, once per seed.
  assert calls == [[sys.executable, '-m', 'mmer_jax.main', f'--config={CONFIG}',
                    f'--workdir={tmp_path}/gated_attention_seed{s}', f'--config.seed={s}',
                    '--config.train.num_epochs=3', '--config.method.fusion=gated'] for s in ('0', '1')]
  table = json.loads((tmp_path / 'table.json').read_text())
  assert table['rows'] == ['depth4', 'gated_attention'] and table['seeds'] == ['0', '1']
  assert set(table['mean']) == {'depth4', 'gated_attention'}
  assert table['mean']['depth4']['wa'] == pytest.approx(0.61)
  assert table['wall_clock_s'] == {'gated_attention': pytest.approx(10.5)}  # avt's runs have none
  assert not any(o['worse'] == 'gated_attention' for o in table['orderings'])  # avt not tabulated
  text = (tmp_path / 'table.md').read_text()
  assert ('| depth4 | `num_layers=4` (avt\'s runs) | 0.6100 ± 0.0141 | 0.5550 ± 0.0071 | 0.6000 ± 0.0141 '
          '| n/a |') in text
  assert ('| gated_attention | `fusion=gated` | 0.5000 ± 0.0000 | 0.4000 ± 0.0000 | 0.4500 ± 0.0000 '
          '| 10.5 |') in text
  # Everything exists now: a second table trains nothing.
  calls.clear()
  mmgcn_table.main([], values)
  assert not calls
  with pytest.raises(ValueError, match='unknown rows'):
    mmgcn_table.build_table(str(tmp_path), ['avt', 'depth3'], SEEDS, config=CONFIG)


def test_one_seed_has_no_spread_or_t(tmp_path, no_training):
  _write_runs(tmp_path, {'avt': FAKE['avt'][:1], 'late_fusion': [(0.55, 0.5, 0.52)]})
  table = mmgcn_table.build_table(str(tmp_path), ['avt', 'late_fusion'], ['0'], config=CONFIG)
  assert table['std']['avt'] == {'wa': 0.0, 'ua': 0.0, 'weighted_f1': 0.0}
  o = table['orderings'][0]
  assert (o['better'], o['worse'], o['metric']) == ('avt', 'late_fusion', 'weighted_f1')
  assert o['std_diff'] is None and o['t'] is None and o['t_critical'] is None and o['significant'] is None
  assert o['holds'] and o['seeds_held'] == 1
  text = mmgcn_table.markdown(table)
  assert '| avt > late_fusion | weighted F1 | +7.00 ± n/a | 1/1 | n/a | n/a | n/a | yes |' in text
  assert table['best_depth'] == {}


def test_depth_rows_may_have_fewer_seeds(tmp_path, no_training):
  """`depth_seeds`: the deep rows on a prefix of the seeds; their orderings pair the seeds both
  rows have (here depth4 = avt's seed 0 against depth64's seed 0)."""
  _write_runs(tmp_path, {'avt': FAKE['avt'], 'depth64': FAKE['depth64'][:1]})
  table = mmgcn_table.build_table(str(tmp_path), ['avt', 'depth4', 'depth64'], SEEDS, config=CONFIG,
                                  depth_seeds=['0'])
  assert table['row_seeds'] == {'avt': SEEDS, 'depth4': SEEDS, 'depth64': ['0']}
  assert table['runs']['depth64'] == [str(tmp_path / 'depth64_seed0')]
  o = [o for o in table['orderings'] if o['worse'] == 'depth64' and o['metric'] == 'weighted_f1'][0]
  assert o['num_seeds'] == 1 and o['mean_diff'] == pytest.approx(FAKE['avt'][0][2] - FAKE['depth64'][0][2])
  assert '(seeds 0)' in mmgcn_table.markdown(table)
  with pytest.raises(ValueError, match='prefix'):
    mmgcn_table.build_table(str(tmp_path), ['avt'], SEEDS, config=CONFIG, depth_seeds=['1'])
