"""`python -m mmer_jax.compare`: finding runs (runs, sweeps, folders), grouping them into entries,
mean ± sample std over seeds, the markdown and JSON, the robustness figure and clear errors. Its
complexity table of a real (tiny) trained run: test_complexity.py."""

import json
import os
import types

import numpy as np
import pytest

from mmer_jax import compare

CONDITIONS = ('full', 'a', 'rate=0.0', 'rate=0.5', 'noise=0.3')


def _metrics(base: float, task: str = 'classification') -> dict:
  if task == 'regression':
    return {'mae': base, 'corr': 1 - base, 'acc2': 1 - base / 2}
  return {'wa': base, 'ua': base - 0.01, 'weighted_f1': base + 0.01, 'macro_f1': base}


def write_run(path, *, method='early_fusion', seed=0, values=None, lr=1e-3, variant=None,
              dataset='synthetic/iemocap_4', task='classification', conditions=CONDITIONS):
  """A fake finished run: results.json (the `ua` of each condition from `values`, else a number
  from the seed) and config.json, written by hand."""
  os.makedirs(path, exist_ok=True)
  values = values or {c: 0.5 + 0.01 * seed - 0.05 * i for i, c in enumerate(conditions)}
  shift = 0.01 if task == 'classification' else 0.0  # ua = base - 0.01 = the value
  rows = [{'condition': c, 'metrics': _metrics(values[c] + shift, task),
           'num_samples': 16, 'missing_fraction': {'audio': 0.0}} for c in conditions]
  results = {'method': method, 'dataset': dataset, 'split': 'test', 'seed': seed, 'task': task,
             'rows': rows, 'train_missing': 'none'}
  if variant:
    results['variant'] = variant
  config = {'seed': seed, 'stage_name': 'main', 'stages': {}, 'resolved': True,
            'data': {'name': dataset, 'data_dir': f'/data/copy{seed}', 'features_dir': None,
                     'batch_size': 8},
            'method': {'name': method, **({'variant': variant} if variant else {}), 'hidden': [16, 16]},
            'optimizer': {'learning_rate': lr},
            'eval': {'rates': [0.0, 0.5]}}
  with open(os.path.join(path, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f)
  with open(os.path.join(path, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f)
  return str(path)


def _ua(path, condition):
  with open(os.path.join(path, 'results.json'), encoding='utf-8') as f:
    return next(r['metrics']['ua'] for r in json.load(f)['rows'] if r['condition'] == condition)


@pytest.fixture
def three_entries(tmp_path):
  """early_fusion lr 1e-3 (seeds 0, 1, 2), early_fusion lr 1e-2 (seeds 0, 1), late_fusion (seed 0)."""
  rng = np.random.default_rng(0)
  runs = {'ef3': [], 'ef2': [], 'lf': []}
  for seed in range(3):
    runs['ef3'].append(write_run(tmp_path / 'runs' / f'ef_lr3_s{seed}', seed=seed,
                                 values={c: float(rng.uniform(0.3, 0.8)) for c in CONDITIONS}))
  for seed in range(2):
    runs['ef2'].append(write_run(tmp_path / 'runs' / f'ef_lr2_s{seed}', seed=seed, lr=1e-2,
                                 values={c: float(rng.uniform(0.3, 0.8)) for c in CONDITIONS}))
  runs['lf'].append(write_run(tmp_path / 'runs' / 'lf_s0', method='late_fusion'))
  return runs


def test_means_stds_grouping_and_labels(three_entries, tmp_path):
  report = compare.compare([str(tmp_path / 'runs')], str(tmp_path / 'out'), complexity=False)
  assert report['dataset'] == 'synthetic/iemocap_4' and report['task'] == 'classification'
  assert report['metrics'] == ['wa', 'ua', 'weighted_f1']  # the classification defaults
  assert report['conditions'] == list(CONDITIONS)
  labels = [e['label'] for e in report['entries']]
  # The seed and the data directory differ between runs but make no entries; the learning rate
  # does (no value shared by most, so both early_fusion entries show it).
  assert sorted(labels) == ['early_fusion optimizer.learning_rate=0.001',
                            'early_fusion optimizer.learning_rate=0.01', 'late_fusion']
  entries = {e['label']: e for e in report['entries']}
  for label, key in (('early_fusion optimizer.learning_rate=0.001', 'ef3'),
                     ('early_fusion optimizer.learning_rate=0.01', 'ef2')):
    entry = entries[label]
    assert entry['n'] == len(three_entries[key]) and entry['seeds'] == list(range(entry['n']))
    assert entry['fields'] == {'optimizer.learning_rate': 0.001 if key == 'ef3' else 0.01}
    for c in CONDITIONS:
      values = [_ua(p, c) for p in three_entries[key]]
      cell = entry['cells'][c]['ua']
      assert cell['n'] == len(values)
      np.testing.assert_allclose(cell['mean'], np.mean(values), rtol=1e-12)
      np.testing.assert_allclose(cell['std'], np.std(values, ddof=1), rtol=1e-12)
  single = entries['late_fusion']['cells']['full']['ua']
  assert single['n'] == 1 and single['std'] is None  # no spread from one seed
  saved = json.loads((tmp_path / 'out' / 'compare.json').read_text())
  assert saved['entries'][0]['cells'] == report['entries'][0]['cells']
  assert 'ddof=1' in saved['std']


def test_labels_show_what_differs_from_the_shared_value(tmp_path):
  for i, (lr, hidden) in enumerate(((1e-3, [16, 16]), (1e-3, [16, 16]), (1e-2, [16, 16]), (1e-3, [32]))):
    write_run(tmp_path / f'r{i}', seed=0)
    config = json.loads((tmp_path / f'r{i}' / 'config.json').read_text())
    config['optimizer']['learning_rate'], config['method']['hidden'] = lr, hidden
    (tmp_path / f'r{i}' / 'config.json').write_text(json.dumps(config))
  with pytest.raises(compare.CompareError, match='same config and seed 0'):
    compare.compare([str(tmp_path)], str(tmp_path / 'out'), complexity=False)
  config = json.loads((tmp_path / 'r1' / 'config.json').read_text())
  config['seed'] = 1
  (tmp_path / 'r1' / 'config.json').write_text(json.dumps(config))
  results = json.loads((tmp_path / 'r1' / 'results.json').read_text())
  results['seed'] = 1
  (tmp_path / 'r1' / 'results.json').write_text(json.dumps(results))
  report = compare.compare([str(tmp_path)], str(tmp_path / 'out'), complexity=False)
  assert [e['label'] for e in report['entries']] == [
      'early_fusion', 'early_fusion optimizer.learning_rate=0.01', 'early_fusion method.hidden=[32]']
  assert report['entries'][0]['n'] == 2
  assert report['entries'][2]['fields'] == {'method.hidden': [32], 'optimizer.learning_rate': 0.001}


def test_markdown_cells_and_partial_rows(three_entries, tmp_path):
  extra = write_run(tmp_path / 'runs' / 'ef_lr3_s3', seed=3, conditions=('full', 'rate=0.5', 'rate=0.7'))
  report = compare.compare([str(tmp_path / 'runs')], str(tmp_path / 'out'), metrics=['ua'],
                           complexity=False)
  assert report['conditions'] == list(CONDITIONS) + ['rate=0.7']  # the union, in order
  text = (tmp_path / 'out' / 'compare.md').read_text()
  assert '## ua' in text and '## wa' not in text and 'ddof=1' in text
  entry = next(e for e in report['entries'] if e['label'].endswith('=0.001'))
  assert entry['n'] == 4 and extra in entry['runs']
  a = entry['cells']['a']['ua']  # seed 3 has no `a` row: 3 of the 4 runs
  line = next(line for line in text.splitlines() if line.startswith(f"| {entry['label']} | 4 |"))
  cells = [c.strip() for c in line.strip('|').split('|')]
  assert cells[3].strip('*') == f"{a['mean']:.4f} ± {a['std']:.4f} (3)"
  only = entry['cells']['rate=0.7']['ua']
  assert cells[-1].strip('*') == f"{only['mean']:.4f} (1)" and only['std'] is None
  late = next(line for line in text.splitlines() if line.startswith('| late_fusion | 1 |'))
  assert late.rstrip().endswith('|  |')  # late_fusion has no rate=0.7 row: an empty cell


def test_robustness_figure_and_rate_curve(three_entries, tmp_path):
  out = tmp_path / 'out'
  report = compare.compare([str(tmp_path / 'runs')], str(out), metrics=['ua', 'wa'], complexity=False)
  for metric in ('ua', 'wa'):
    png = out / f'robustness_{metric}.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 1000
    assert png.name in report['files']
  entries = compare.group_runs([compare.load_run(p) for p in three_entries['ef3']])
  curve = compare.rate_curve(entries[0], list(CONDITIONS), 'ua')
  assert [x for x, _ in curve] == [0.0, 0.5]  # rate=0.0 (not full) at 0; noise rows left out
  np.testing.assert_allclose(curve[1][1]['mean'],
                             np.mean([_ua(p, 'rate=0.5') for p in three_entries['ef3']]))
  # Without a rate=0.0 row, `full` stands for rate 0; without two rates, no figure.
  run = compare.load_run(write_run(tmp_path / 'other' / 'x', conditions=('full', 'rate=0.3')))
  entry = compare.group_runs([run])[0]
  assert [x for x, _ in compare.rate_curve(entry, ['full', 'rate=0.3'], 'ua')] == [0.0, 0.3]
  assert compare.plot_robustness([entry], ['full'], 'ua', str(tmp_path / 'none.png'), 't') is None
  assert not (tmp_path / 'none.png').exists()


def test_regression_defaults_and_best_is_lowest_mae(tmp_path):
  write_run(tmp_path / 'a', method='early_fusion', task='regression', dataset='mosi',
            values={c: 0.9 for c in CONDITIONS})
  write_run(tmp_path / 'b', method='late_fusion', variant='augmented', task='regression',
            dataset='mosi', values={c: 0.7 for c in CONDITIONS})
  report = compare.compare([str(tmp_path / 'a'), str(tmp_path / 'b')], str(tmp_path / 'out'),
                           complexity=False)
  assert report['metrics'] == ['mae', 'corr', 'acc2']
  text = (tmp_path / 'out' / 'compare.md').read_text()
  mae = text.split('## mae')[1].split('##')[0]
  assert '| late_fusion/augmented | 1 | **0.7000** |' in mae and '| early_fusion | 1 | 0.9000 |' in mae
  corr = text.split('## corr')[1].split('##')[0]
  assert '| early_fusion | 1 | 0.1000 |' in corr and '| late_fusion/augmented | 1 | **0.3000** |' in corr


def test_sweeps_folders_and_each_run_once(tmp_path):
  sweep = tmp_path / 'sweep'
  members = []
  for i, lr in enumerate((1e-3, 1e-2)):
    write_run(sweep / 'members' / f'm{i}', seed=0, lr=lr)
    members.append({'name': f'lr{i}', 'workdir': f'members/m{i}',
                    'overrides': {'optimizer.learning_rate': lr}})
  (sweep / 'sweep.json').write_text(json.dumps({
      'config': 'configs/x.py', 'method': 'early_fusion', 'dataset': 'synthetic/iemocap_4',
      'task': 'classification', 'members': members, 'rows': []}))
  staged = write_run(tmp_path / 'folder' / 'mmin_s0', method='mmin')
  write_run(tmp_path / 'folder' / 'mmin_s0' / 'stage1', method='early_fusion')  # part of the run
  write_run(tmp_path / 'folder' / 'deeper' / 'mmin_s1', method='mmin', seed=1)
  found = compare.find_runs([str(sweep), str(tmp_path / 'folder'), staged, str(sweep / 'members' / 'm0')])
  assert found == [os.path.normpath(p) for p in (
      sweep / 'members' / 'm0', sweep / 'members' / 'm1', tmp_path / 'folder' / 'deeper' / 'mmin_s1',
      tmp_path / 'folder' / 'mmin_s0')]
  # A folder holding the sweep finds its members through sweep.json, once.
  assert compare.find_runs([str(tmp_path)]) == found[2:] + found[:2]  # folder/ before sweep/
  report = compare.compare([str(tmp_path)], str(tmp_path / 'out'), complexity=False)
  assert sorted(e['label'] for e in report['entries']) == [
      'early_fusion optimizer.learning_rate=0.001', 'early_fusion optimizer.learning_rate=0.01', 'mmin']
  assert next(e for e in report['entries'] if e['method'] == 'mmin')['seeds'] == [0, 1]


def test_clear_errors(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(compare.CompareError, match='empty: neither a run'):
    compare.find_runs([str(tmp_path / 'empty')])
  with pytest.raises(compare.CompareError, match='nowhere: neither a run'):
    compare.find_runs([str(tmp_path / 'nowhere')])

  run = write_run(tmp_path / 'r0')
  results = json.loads((tmp_path / 'r0' / 'results.json').read_text())
  for field in ('seed', 'task', 'dataset'):
    broken = {k: v for k, v in results.items() if k != field}
    (tmp_path / 'r0' / 'results.json').write_text(json.dumps(broken))
    with pytest.raises(compare.CompareError, match=f"r0/results.json: missing field '{field}'"):
      compare.load_run(run)
  broken = json.loads(json.dumps(results))
  del broken['rows'][2]['metrics']
  (tmp_path / 'r0' / 'results.json').write_text(json.dumps(broken))
  with pytest.raises(compare.CompareError, match=r"r0/results.json: rows\[2\] has no field 'metrics'"):
    compare.load_run(run)
  (tmp_path / 'r0' / 'results.json').write_text(json.dumps(results))
  os.remove(os.path.join(run, 'config.json'))
  with pytest.raises(compare.CompareError, match='r0: no config.json'):
    compare.load_run(run)

  a = write_run(tmp_path / 'd' / 'iemocap', seed=0)
  b = write_run(tmp_path / 'd' / 'meld', seed=0, dataset='meld_7')
  with pytest.raises(compare.CompareError, match='2 datasets') as e:
    compare.compare([a, b], str(tmp_path / 'out'), complexity=False)
  assert 'synthetic/iemocap_4' in str(e.value) and 'meld_7' in str(e.value)
  assert a in str(e.value) and b in str(e.value)
  with pytest.raises(compare.CompareError, match="--metrics: \\['mae'\\] not computed for classification"):
    compare.compare([a], str(tmp_path / 'out'), metrics=['ua', 'mae'], complexity=False)

  sweep = tmp_path / 'sweep'
  sweep.mkdir()
  (sweep / 'sweep.json').write_text(json.dumps({'members': [{'name': 'lr0', 'workdir': 'm0'}]}))
  with pytest.raises(compare.CompareError, match="member 'lr0'.*no results.json"):
    compare.find_runs([str(sweep)])
  (sweep / 'sweep.json').write_text(json.dumps({'runs': []}))
  with pytest.raises(compare.CompareError, match="sweep.json: missing field 'members'"):
    compare.find_runs([str(sweep)])


def _options(**values):
  defaults = {'out': None, 'metrics': None, 'complexity': False, 'complexity_steps': 1,
              'complexity_warmup': 0}
  return {k: types.SimpleNamespace(value=v) for k, v in {**defaults, **values}.items()}


def test_main_prints_the_error_and_exits_1(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    compare.main(['compare', str(tmp_path / 'missing')], options=_options(out=str(tmp_path / 'out')))
  assert e.value.code == 1
  assert 'error: ' in capsys.readouterr().err
  run = write_run(tmp_path / 'r')
  compare.main(['compare', run], options=_options(out=str(tmp_path / 'out')))
  assert 'compare.md' in capsys.readouterr().out and (tmp_path / 'out' / 'compare.json').exists()
