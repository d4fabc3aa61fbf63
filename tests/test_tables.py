"""mmer_jax/tables.py and launch/table.py: runs from a spec, waves, links, the aggregate (sample
std, n, paired orderings) and the specs of the published tables."""

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


@pytest.mark.parametrize('name', ['imder_mosi', 'mmgcn_iemocap6'])
def test_published_specs_print_their_commands(tmp_path, name):
  out = subprocess.run([sys.executable, 'launch/table.py', f'--spec=launch/tables/{name}.py',
                        f'--workdir={tmp_path}', '--seeds=0', '--print'], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  commands = [line for line in out.stdout.splitlines() if not line.startswith('#')]
  spec = tables.load_spec(str(REPO / 'launch' / 'tables' / f'{name}.py'))
  trained = [r for r, row in spec.rows.items() if not (row.results_of or row.same_as)]
  assert len(commands) == len(trained)
  if name == 'imder_mosi':
    assert out.stdout.index('# wave 1') > out.stdout.index('/imder/seed=0')
    assert os.path.islink(tmp_path / 'zeros_missing' / 'seed=0' / 'stage1')


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
