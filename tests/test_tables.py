"""mmer_jax/tables.py and launch/table.py: runs from a spec, waves, links, `{run:ROW}`, the
aggregate (sample std, n, paired orderings), the specs of the published tables and their numbers
against the launchers they replace."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mmer_jax import tables

REPO = pathlib.Path(__file__).resolve().parents[1]

SPEC = tables.Spec(
    name='toy', config='configs/fusion_iemocap.py:smoke', seeds=(0, 1, 2),
    overrides=('--config.train.num_epochs=1',),
    rows={'main': tables.Row(),
          'stage': tables.Row(results_of=('main', 'stage1')),
          'reuse': tables.Row(overrides=('--config.method.x=1',), link={'stage1': 'main'}),
          'same': tables.Row(same_as='main')},
    conditions=('full', 'rate=0.5'), metrics=('mae', 'acc2'),
    derived={'avg': ('full', 'rate=0.5')},
    orderings=(tables.Ordering('main', 'reuse', 'mae', 'full', 'lower MAE'),
               tables.Ordering('main', 'reuse', 'acc2', 'avg')))


def _write(path, mae, acc2):
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = [{'condition': c, 'metrics': {'mae': mae + k, 'acc2': acc2 - k}}
          for k, c in enumerate(('full', 'rate=0.5'))]
  path.write_text(json.dumps({'rows': rows}))


def test_commands_links_and_waves(tmp_path):
  waves = tables.pending(str(tmp_path), SPEC, ['reuse', 'same', 'stage'], [0, 1], python='py')
  # `reuse` needs `main`'s run: main first; `stage` and `same` train nothing.
  assert [len(w) for w in waves] == [2, 2]
  first = waves[0][0]
  assert first[:3] == ['py', '-m', 'mmer_jax.main']
  assert f'--workdir={tmp_path}/main/seed=0' in first and '--config.seed=0' in first
  second = waves[1][1]
  assert second[-1] == '--config.method.x=1' and '--config.train.num_epochs=1' in second
  link = tmp_path / 'reuse' / 'seed=1' / 'stage1'
  assert link.is_symlink() and link.resolve() == (tmp_path / 'main' / 'seed=1' / 'stage1')
  _write(tmp_path / 'main' / 'seed=0' / 'results.json', 0.5, 0.8)
  assert [len(w) for w in tables.pending(str(tmp_path), SPEC, ['main'], [0, 1])] == [1]


def test_aggregate_is_the_sample_std_over_seeds_and_pairs_orderings(tmp_path):
  maes, accs = [0.5, 0.6, 0.8], [0.8, 0.7, 0.75]
  for seed, (mae, acc) in enumerate(zip(maes, accs)):
    _write(tmp_path / 'main' / f'seed={seed}' / 'results.json', mae, acc)
    _write(tmp_path / 'main' / f'seed={seed}' / 'stage1' / 'results.json', mae + 1, acc)
    if seed < 2:  # reuse has two seeds
      _write(tmp_path / 'reuse' / f'seed={seed}' / 'results.json', mae + 0.1 * (seed + 1), acc - 0.1)
  table = tables.aggregate(str(tmp_path), SPEC, list(SPEC.rows), [0, 1, 2])
  cell = table['rows']['main']['cells']['full']['mae']
  np.testing.assert_allclose([cell['mean'], cell['std']], [np.mean(maes), np.std(maes, ddof=1)])
  assert cell['n'] == 3 and table['rows']['reuse']['seeds'] == [0, 1]
  assert table['rows']['stage']['cells']['full']['mae']['mean'] == pytest.approx(np.mean(maes) + 1)
  assert table['rows']['same']['cells'] == table['rows']['main']['cells']
  avg = table['rows']['main']['cells']['avg']['acc2']['values']
  np.testing.assert_allclose(avg, [a - 0.5 for a in accs])  # mean of acc2 and acc2 - 1
  by_metric = {o['metric']: o for o in table['orderings']}
  # MAE: lower is better, so the difference is worse - better: 0.1, 0.2 on seeds 0, 1.
  assert by_metric['mae']['seeds'] == [0, 1] and by_metric['mae']['mean_diff'] == pytest.approx(0.15)
  assert by_metric['mae']['seeds_held'] == 2 and by_metric['acc2']['mean_diff'] == pytest.approx(0.1)
  text = tables.markdown(table)
  assert '| reuse | 2 |' in text and 'lower MAE' in text and '(2)' not in text.split('**acc2**')[0]


def test_a_run_placeholder_names_another_rows_run_of_the_same_seed(tmp_path):
  spec = tables.Spec(name='toy', config='c.py', rows={
      'reads': tables.Row(overrides=('--config.method.pretrained_workdir={run:base}',)),
      'base': tables.Row(), 'alias': tables.Row(same_as='base')})
  waves = tables.pending(str(tmp_path), spec, ['reads'], [3], python='py')
  assert [len(w) for w in waves] == [1, 1] and f'--workdir={tmp_path}/base/seed=3' in waves[0][0]
  assert waves[1][0][-1] == f'--config.method.pretrained_workdir={tmp_path}/base/seed=3'
  assert tables.fill_runs('{run:alias}:{run:base}', 'w', spec, 0) == 'w/base/seed=0:w/base/seed=0'


SPECS = {'imder_mosi': None, 'mmgcn_iemocap6': None, 'mmin_iemocap4': None, 'm3er': 'ravdess_av',
         'features': '/feats/ravdess_av,imder'}


@pytest.mark.parametrize('name', list(SPECS))
def test_published_specs_print_their_commands(tmp_path, name):
  arg = SPECS[name]
  out = subprocess.run([sys.executable, 'launch/table.py',
                        f'--spec=launch/tables/{name}.py' + (f':{arg}' if arg else ''),
                        f'--workdir={tmp_path}', '--seeds=0,1', '--print'], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  commands = [line for line in out.stdout.splitlines() if not line.startswith('#')]
  spec = tables.load_spec(str(REPO / 'launch' / 'tables' / f'{name}.py'), arg)
  trained = [r for r, row in spec.rows.items() if not (row.results_of or row.same_as)]
  assert sorted(commands) == sorted(set(commands))
  assert sorted(c.split('--workdir=')[1].split()[0] for c in commands) == sorted(
      f'{tmp_path}/{r}/seed={s}' for r in trained for s in (0, 1))
  if name == 'imder_mosi':
    assert out.stdout.index('# wave 1') > out.stdout.index('/imder/seed=0')
    assert os.path.islink(tmp_path / 'zeros_missing' / 'seed=0' / 'stage1')
  if name == 'mmin_iemocap4':  # the MMIN rows start from their seed's full_baseline run
    assert out.stdout.index('# wave 1') > out.stdout.index('/full_baseline/seed=1 ')
    assert f'--config.method.pretrained_workdir={tmp_path}/full_baseline/seed=1' in out.stdout
  if name == 'm3er':  # the re-evaluated rows run m3er's network
    assert out.stdout.index('# wave 1') > out.stdout.index('/m3er/seed=1 ')
    for name in ('checkpoints', 'feature_stats.json'):
      assert os.readlink(tmp_path / 'no_proxy' / 'seed=1' / name) == str(
          tmp_path / 'm3er' / 'seed=1' / name)
    assert all('--config.data.features_dir=../shared/data/ravdess_av' in c for c in commands)
  if name == 'features':
    assert all('--config.data.features_dir=/feats/ravdess_av ' in c for c in commands)
    assert '/imder/seed=1' in out.stdout and '/imder_zeros_complete/' not in out.stdout


# The specs against the launchers they replace (launch/{mmin,m3er,features}_table.py): the old
# launcher run on fake results.json in its own layout (nothing to train, so it only tabulates),
# tables.aggregate on the same files linked into <workdir>/<row>/seed=<k>.

def _old_table(launcher: str, *flags: str) -> dict:
  out = subprocess.run([sys.executable, f'launch/{launcher}.py', *flags], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  workdir = next(f.split('=', 1)[1] for f in flags if f.startswith('--workdir='))
  return json.loads(pathlib.Path(workdir, 'table.json').read_text())


def _fake_results(path: pathlib.Path, conditions, metrics, rng) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({'rows': [
      {'condition': c, 'metrics': {m: float(rng.uniform(0.3, 0.9)) for m in metrics},
       'num_samples': 60 + k} for k, c in enumerate(conditions)]}))


def _link(new: pathlib.Path, old: pathlib.Path) -> None:
  new.parent.mkdir(parents=True, exist_ok=True)
  new.symlink_to(old, target_is_directory=True)


def _close(a, b):
  assert a == pytest.approx(b, rel=0, abs=1e-12)


def _same_orderings(old: list[dict], new: list[dict], key) -> None:
  new = {(o['better'], o['worse'], o['metric'], o['condition']): o for o in new}
  assert len(new) == len(old)
  for o in old:
    n = new[key(o)]
    for k in ('mean_diff', 'std_diff', 't'):
      _close(n[k], o[k])
    for k in ('seeds_held', 'num_seeds', 't_critical', 'significant', 'holds'):
      assert n[k] == o[k]


def test_mmin_spec_matches_mmin_table(tmp_path):
  spec = tables.load_spec(str(REPO / 'launch' / 'tables' / 'mmin_iemocap4.py'))
  rng, seeds = np.random.default_rng(0), (0, 1, 2)
  for row in spec.rows:
    for seed in seeds:
      old = tmp_path / 'old' / f'{row}_seed{seed}'
      _fake_results(old / 'results.json', spec.conditions, ('wa', 'ua'), rng)
      if row in ('mmin', 'mmin_ae'):  # mmin_nocycle: no imagination report, left out
        ratios = {c: {'ratio_to_train_mean': float(rng.uniform(0.5, 1.2)),
                      'ratio_to_zeros': float(rng.uniform(0.2, 0.8)),
                      'mse': {'imagined': float(rng.uniform(0.1, 1.0))}}
                  for c in spec.derived['average']}
        (old / 'imagination_mse.json').write_text(json.dumps({
            'conditions': ratios, 'beats_train_mean_everywhere': seed != 1}))
      _link(tmp_path / 'new' / row / f'seed={seed}', old)
  old = _old_table('mmin_table', f'--workdir={tmp_path}/old', '--seeds=0,1,2')
  table = tables.aggregate(str(tmp_path / 'new'), spec, list(spec.rows), seeds)
  analysis = spec.analysis(str(tmp_path / 'new'), spec, table)
  # mmin_table's std was the population std (np.std); the table's is the sample std.
  to_sample = np.sqrt(len(seeds) / (len(seeds) - 1))
  for row in spec.rows:
    for metric in ('wa', 'ua'):
      for column, mean in old['mean'][row][metric].items():
        cell = table['rows'][row]['cells'][column][metric]
        _close(cell['mean'], mean)
        _close(cell['std'], old['std'][row][metric][column] * to_sample)
  _same_orderings(old['orderings'], table['orderings'],
                  lambda o: (o['better'], o['worse'], o['metric'], 'average'))
  assert [(c['better'], c['worse'], c['metric'], c['test'], c['criterion_holds']) for c in
          analysis['criterion']] == [(c['better'], c['worse'], c['metric'], c['test'],
                                      c['criterion_holds']) for c in old['criterion']]
  assert set(analysis['imagination']) == set(old['imagination']) == {'mmin', 'mmin_ae'}
  for row, imag in old['imagination'].items():
    new = analysis['imagination'][row]
    assert (new['num_seeds'], new['beats_train_mean_everywhere']) == (
        imag['num_seeds'], imag['beats_train_mean_everywhere'])
    for c, o in imag['conditions'].items():
      n = new['conditions'][c]
      _close(n['ratio_to_train_mean']['mean'], o['ratio_to_train_mean'])
      _close(n['ratio_to_train_mean']['std'], o['ratio_to_train_mean_std'] * to_sample)
      _close(n['ratio_to_zeros']['mean'], o['ratio_to_zeros'])
      _close(n['mse_imagined']['mean'], o['mse_imagined'])
      assert n['seeds_beating_train_mean'] == o['seeds_beating_train_mean']


def test_m3er_spec_matches_m3er_table(tmp_path):
  spec = tables.load_spec(str(REPO / 'launch' / 'tables' / 'm3er.py'))
  rng, seeds = np.random.default_rng(1), (0, 1, 2, 3)
  for row in spec.rows:
    for seed in seeds:
      old = tmp_path / 'old' / f'{row}_seed{seed}'
      _fake_results(old / 'results.json', ('a', *spec.conditions), spec.metrics, rng)
      _link(tmp_path / 'new' / row / f'seed={seed}', old)
  old = _old_table('m3er_table', f'--workdir={tmp_path}/old', '--seeds=0,1,2,3')
  table = tables.aggregate(str(tmp_path / 'new'), spec, list(spec.rows), seeds)
  assert list(table['rows']) == list(old['rows'])
  for row, cells in old['rows'].items():
    for condition, by_metric in cells.items():
      for metric, (mean, std) in by_metric.items():
        cell = table['rows'][row]['cells'][condition][metric]
        _close(cell['mean'], mean)
        _close(cell['std'], std)
  _same_orderings(old['orderings'], table['orderings'],
                  lambda o: (o['better'], o['worse'], o['metric'], o['condition']))


def test_features_spec_matches_features_table(tmp_path):
  spec = tables.load_spec(str(REPO / 'launch' / 'tables' / 'features.py'), 'DIR,imder')
  rng, seeds = np.random.default_rng(2), (0, 1, 2)
  # An audio-visual directory: no condition with text.
  grid = [c for c in spec.conditions if 't' not in c.split('=')[0]]
  trained = [r for r, row in spec.rows.items() if not row.results_of]
  for row in trained:
    for seed in seeds:
      old = tmp_path / 'old' / row / f'seed_{seed}'
      _fake_results(old / 'results.json', grid, ('wa', 'ua'), rng)
      if row == 'imder':
        _fake_results(old / 'stage1' / 'results.json', grid, ('wa', 'ua'), rng)
      _link(tmp_path / 'new' / row / f'seed={seed}', old)
  old = _old_table('features_table', f'--workdir={tmp_path}/old', '--features_dir=DIR',
                   '--seeds=0,1,2', f'--rows={",".join(spec.rows)}')['table']
  table = tables.aggregate(str(tmp_path / 'new'), spec, list(spec.rows), seeds)
  samples = spec.analysis(str(tmp_path / 'new'), spec, table)
  assert list(table['rows']) == list(old)
  for row, cells in old.items():
    assert list(table['rows'][row]['cells']) == list(cells)  # the grid, in the old order
    for condition, cell in cells.items():
      for metric in ('wa', 'ua'):
        new = table['rows'][row]['cells'][condition][metric]
        _close(new['mean'], cell[metric][0])
        _close(new['std'], cell[metric][1])
      assert samples[row][condition] == cell['n']


def test_imder_fast_cost_pairs_fast_with_em100_per_seed(tmp_path, monkeypatch):
  """The IMDer spec's analysis: imder_fast's own rate-0.5 row against both checkpoints
  re-evaluated with Euler-Maruyama 100 (faked here), paired by seed, kept per seed."""
  from mmer_jax import reevaluate  # pylint: disable=g-import-not-at-top
  spec = tables.load_spec(str(REPO / 'launch' / 'tables' / 'imder_mosi.py'))
  metrics = ('mae', 'acc2', 'f1', 'acc7', 'corr')
  for seed in (0, 1):
    for row, mae in (('imder', 0.9), ('imder_fast', 0.8)):
      path = tmp_path / row / f'seed={seed}' / 'results.json'
      path.parent.mkdir(parents=True)
      path.write_text(json.dumps({'rows': [{'condition': 'rate=0.5', 'metrics': {
          m: mae + 0.01 * seed if m == 'mae' else 0.5 for m in metrics}}]}))
  calls = []

  class Fake:
    def __init__(self, run_dir):
      self.run_dir = run_dir

    def metrics_at(self, rate, changes):
      calls.append((os.path.relpath(self.run_dir, tmp_path), rate, changes['method.num_steps']))
      fast = os.path.relpath(self.run_dir, tmp_path).startswith('imder_fast')
      return {m: (0.95 if fast else 0.9) if m == 'mae' else 0.5
              for m in metrics}
  monkeypatch.setattr(reevaluate, 'Restored', Fake)
  table = tables.aggregate(str(tmp_path), spec, list(spec.rows), [0, 1])
  cost = spec.analysis(str(tmp_path), spec, table)['fast']
  assert calls == [(f'{row}/seed={s}', 0.5, 100) for s in (0, 1) for row in ('imder', 'imder_fast')]
  # fast (0.80, 0.81) - em100 (0.90, 0.90): -0.10, -0.09
  np.testing.assert_allclose(cost['paired']['fast - em100']['mae'],
                             [-0.095, np.std([-0.1, -0.09], ddof=1)], atol=1e-9)
  assert cost['summary']['fast_em100']['mae'][0] == pytest.approx(0.95)
  spec.analysis(str(tmp_path), spec, table)  # kept: no evaluation again
  assert len(calls) == 4
