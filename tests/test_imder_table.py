"""launch/imder_table.py: the aggregation over seeds, the paired differences, the overrides, and
that `--scale=cpu` runs the config's `cpu` variant."""

import json
import pathlib
import sys
import types

import ml_collections
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'launch'))

import imder_table  # noqa: E402


def _results(mae_by_rate, acc2=0.8):
  rows = [{'condition': 'full', 'metrics': {m: 0.0 for m in imder_table.METRICS}}]
  for rate, mae in mae_by_rate.items():
    metrics = {m: 0.5 for m in imder_table.METRICS}
    metrics.update(mae=mae, acc2=acc2)
    rows.append({'condition': f'rate={rate}', 'metrics': metrics})
  return {'rows': rows}


def test_aggregate_pairs_rows_by_seed():
  per_seed = {
      'imder': [_results({0.3: 0.7, 0.5: 0.8}, 0.80), _results({0.3: 0.6, 0.5: 0.9}, 0.82)],
      'zeros_complete': [_results({0.3: 0.9, 0.5: 1.0}, 0.70), _results({0.3: 0.8, 0.5: 0.85}, 0.75)],
  }
  agg = imder_table.aggregate(per_seed)
  assert agg['rows']['imder']['0.3']['mae'] == pytest.approx([0.65, np.std([0.7, 0.6], ddof=1)])
  cell = agg['paired']['imder - zeros_complete']['0.5']
  assert cell['mae']['mean_std'][0] == pytest.approx((-0.2 + 0.05) / 2)
  assert cell['mae']['better'] == 1 and cell['mae']['seeds'] == 2  # lower MAE is better
  assert agg['paired']['imder - zeros_complete']['0.3']['acc2']['better'] == 2
  text = imder_table.markdown(agg, ['0', '1'])
  assert '| imder - zeros_complete (paired; seeds better) |' in text and '(1/2)' in text


def test_overrides_set_typed_fields():
  config = ml_collections.ConfigDict({'method': {'score_channels': (32, 64, 128), 'sampler': 'x',
                                                 'num_steps': 100}})
  imder_table.apply_overrides(config, ['--config.method.score_channels=(32, 64)',
                                       '--config.method.sampler=dpm_solver',
                                       '--config.method.num_steps=10'])
  assert config.method.score_channels == (32, 64) and config.method.num_steps == 10
  assert config.method.sampler == 'dpm_solver'


def test_sampler_grid_reaches_the_nfe_points():
  nfe = {s: [n for n in imder_table.NFES if n % per == 0] for s, (_, per) in
         imder_table.SAMPLER_GRID.items()}
  assert nfe['euler_maruyama'] == [5, 10, 20, 50, 100] and nfe['ode_rk4'] == [20, 100]


def _fake_runs(monkeypatch):
  """Stubs the subprocess: records each command and writes the results.json it would."""
  commands = []

  def run(command, check):
    assert check
    commands.append(command)
    workdir = pathlib.Path(next(a for a in command if a.startswith('--workdir=')).split('=', 1)[1])
    for path in (workdir / 'results.json', workdir / 'stage1' / 'results.json'):
      if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_results({0.0: 0.6, 0.5: 0.8})))
  monkeypatch.setattr(imder_table.subprocess, 'run', run)
  return commands


@pytest.mark.parametrize('scale,config', [('cpu', 'configs/imder_mosi.py:synthetic,cpu'),
                                          ('authors', 'configs/imder_mosi.py:synthetic')])
def test_scale_selects_the_config_variant(tmp_path, monkeypatch, scale, config):
  commands = _fake_runs(monkeypatch)
  values = {'workdir': str(tmp_path), 'seeds': ['0'], 'scale': scale,
            'override': ['--config.train.patience=3'], 'nfe_seed': None, 'nfe_fast_max': 100,
            'nfe_only': False, 'fast': False}
  imder_table.main([], {k: types.SimpleNamespace(value=v) for k, v in values.items()})
  assert len(commands) == 2  # imder (both stages; zeros_complete is its stage 1), zeros_missing
  for command in commands:
    assert f'--config={config}' in command and '--config.train.patience=3' in command
    assert not [a for a in command if a.startswith('--config.method.score_channels')]
  table = json.loads((tmp_path / 'table.json').read_text())
  assert table['config'] == config and table['overrides'] == ['--config.train.patience=3']
  assert not hasattr(imder_table, 'CPU_SCALE')  # one copy of the settings: the config's variant


def test_fast_trains_from_the_imder_stage1_and_pairs_with_em100(tmp_path, monkeypatch):
  commands = _fake_runs(monkeypatch)
  evaluated = []

  def restored(root, row, seed, overrides, scale):
    return types.SimpleNamespace(row=row, seed=seed), None, None

  def evaluate_at(config, workdir, params, sampler, steps, options=None, rate=0.5):
    evaluated.append((config.row, config.seed, sampler, steps))
    mae = 0.9 + 0.01 * int(config.seed) + (0.05 if config.row == 'imder_fast' else 0.0)
    return {m: mae if m == 'mae' else 0.5 for m in imder_table.METRICS}
  monkeypatch.setattr(imder_table, '_restored_run', restored)
  monkeypatch.setattr(imder_table, 'evaluate_at', evaluate_at)
  values = {'workdir': str(tmp_path), 'seeds': ['0', '1'], 'scale': 'cpu', 'override': [],
            'nfe_seed': None, 'nfe_fast_max': 100, 'nfe_only': False, 'fast': True}
  imder_table.main([], {k: types.SimpleNamespace(value=v) for k, v in values.items()})
  fast = [c for c in commands if any('imder_fast' in a for a in c)]
  assert len(fast) == 2 and all('--config=configs/imder_mosi.py:synthetic,cpu,fast' in c
                                for c in fast)
  link = tmp_path / 'imder_fast' / 'seed_0' / 'stage1'
  assert link.is_symlink() and link.resolve() == (tmp_path / 'imder' / 'seed_0' / 'stage1').resolve()
  assert evaluated == [(row, s, 'euler_maruyama', 100) for s in ('0', '1')
                       for row in ('imder', 'imder_fast')]
  cost = json.loads((tmp_path / 'fast.json').read_text())
  # fast (the run's own rate-0.5 MAE, 0.8) minus EM-100's per seed: 0.8 - 0.90, 0.8 - 0.91
  np.testing.assert_allclose(cost['paired']['fast - em100']['mae'],
                             [-0.105, np.std([-0.1, -0.11], ddof=1)], atol=1e-9)
  np.testing.assert_allclose(cost['summary']['fast_em100']['mae'][0], 0.955, atol=1e-9)
  assert '| fast - em100 | -0.105' in (tmp_path / 'fast.md').read_text()


def test_the_nfe_curve_loads_the_variant_the_table_trained():
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from configs import imder_mosi  # pylint: disable=g-import-not-at-top
  config = imder_mosi.get_config(imder_table.SCALES['cpu'])
  assert config.method.score_channels == (32, 64) and config.data.name == 'synthetic/mosi'
  assert imder_mosi.get_config(imder_table.SCALES['authors']).method.score_channels == (
      32, 64, 128, 256)
