"""mmer_jax/tables.py and launch/table.py: runs from a spec, waves, links, `{run:ROW}`, the
aggregate (sample std, n, paired orderings), the analysis in table.md, and the specs of the
published tables (launch/tables/): their commands, cells, orderings and analyses on fake runs."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mmer_jax import paired
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


def _results(path, cells: dict, **per_row) -> None:
  """results.json of `cells` ({condition: {metric: value}}); `per_row`: {key: {condition:
  value}} added to each row (e.g. num_samples)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({'rows': [
      {'condition': c, 'metrics': m, **{k: v[c] for k, v in per_row.items()}}
      for c, m in cells.items()]}))


def _write(path, mae, acc2):
  _results(path, {c: {'mae': mae + k, 'acc2': acc2 - k} for k, c in enumerate(('full', 'rate=0.5'))})


def _load(name: str, arg: str | None = None) -> tables.Spec:
  return tables.load_spec(str(REPO / 'launch' / 'tables' / f'{name}.py'), arg)


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


def test_the_specs_analysis_markdown_ends_table_md(tmp_path):
  spec = dataclasses.replace(SPEC, analysis_markdown=lambda a: f"**extra** {a['x']}\n")
  _write(tmp_path / 'main' / 'seed=0' / 'results.json', 0.5, 0.8)
  table = tables.aggregate(str(tmp_path), spec, ['main'], [0])
  plain = tables.markdown(table, spec)
  assert plain == tables.markdown(table) and '**extra**' not in plain  # no analysis: nothing
  table['analysis'] = {'x': 1}
  tables.write(str(tmp_path), table, spec)
  assert (tmp_path / 'table.md').read_text() == plain + '\n**extra** 1\n'
  assert tables.markdown(table) == plain  # without the spec: the table alone


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


# MMIN (launch/tables/mmin_iemocap4.py): WA and UA on the six missing conditions, full and their
# average; the orderings on the average; the criterion and the imagination ratios.

MISSING = ('a', 'v', 't', 'av', 'at', 'vt')


def _mmin_run(workdir, row: str, seed: int, ua: dict | float, full: float = 0.8,
              wa_shift: float = 0.0) -> None:
  """A run's results.json: UA per missing condition (one value: all six) and on full; WA is UA
  + `wa_shift`."""
  ua = {**(ua if isinstance(ua, dict) else dict.fromkeys(MISSING, ua)), 'full': full}
  _results(workdir / row / f'seed={seed}' / 'results.json',
           {c: {'ua': v, 'wa': v + wa_shift} for c, v in ua.items()})


def test_mmin_average_is_the_mean_of_the_six_missing_conditions(tmp_path):
  spec = _load('mmin_iemocap4')
  assert tuple(spec.derived['average']) == MISSING
  ua = {'a': 0.6, 'v': 0.4, 't': 0.7, 'av': 0.65, 'at': 0.75, 'vt': 0.72}
  _mmin_run(tmp_path, 'augmented', 0, ua, full=0.9, wa_shift=0.01)
  cells = tables.aggregate(str(tmp_path), spec, ['augmented'], [0])['rows']['augmented']['cells']
  assert list(cells) == [*MISSING, 'full', 'average']
  assert cells['average']['ua']['mean'] == pytest.approx(np.mean(list(ua.values())))
  assert cells['average']['wa']['mean'] == pytest.approx(np.mean(list(ua.values())) + 0.01)
  assert cells['full']['ua']['mean'] == 0.9 and cells['full']['wa']['mean'] == pytest.approx(0.91)


def test_mmin_orderings_pair_the_average_by_seed(tmp_path):
  spec = _load('mmin_iemocap4')
  averages = {'mmin': (0.66, 0.67, 0.65), 'augmented': (0.65, 0.66, 0.66),
              'full_baseline': (0.60, 0.61, 0.62)}  # mmin_ae, mmin_nocycle: not run

  def orderings(averages, seeds=(0, 1, 2)):
    for row, values in averages.items():
      for seed in seeds:
        _mmin_run(tmp_path / str(len(seeds)), row, seed, values[seed])
    table = tables.aggregate(str(tmp_path / str(len(seeds))), spec, list(spec.rows), seeds)
    return table, {(o['better'], o['worse'], o['metric']): o for o in table['orderings']}

  table, found = orderings(averages)
  # Orderings with a row that has no runs are left out.
  assert set(found) == {(b, w, m) for b, w in (('mmin', 'augmented'), ('augmented', 'full_baseline'))
                        for m in ('ua', 'wa')}
  assert {o['condition'] for o in table['orderings']} == {'average'}
  o = found['mmin', 'augmented', 'ua']
  diff = np.subtract(averages['mmin'], averages['augmented'])
  assert o['mean_diff'] == pytest.approx(diff.mean())
  assert o['std_diff'] == pytest.approx(diff.std(ddof=1))
  assert o['t'] == pytest.approx(diff.mean() / (diff.std(ddof=1) / np.sqrt(3)))
  assert (o['seeds_held'], o['num_seeds'], o['holds']) == (int((diff > 0).sum()), 3, True)
  o = found['augmented', 'full_baseline', 'wa']
  diff = np.subtract(averages['augmented'], averages['full_baseline'])
  assert o['seeds_held'] == 3 and o['mean_diff'] == pytest.approx(diff.mean())
  # An ordering that fails on average does not hold.
  _, found = orderings({**averages, 'mmin': (0.64, 0.65, 0.65)})
  assert not found['mmin', 'augmented', 'ua']['holds']
  # One seed: no spread and no t (null in the JSON, blank in table.md).
  table, found = orderings(averages, seeds=(0,))
  o = found['mmin', 'augmented', 'ua']
  assert o['std_diff'] is None and o['t'] is None and o['holds']
  claim = next(x.claim for x in spec.orderings if (x.better, x.worse) == ('mmin', 'augmented'))
  diff = averages['mmin'][0] - averages['augmented'][0]
  assert f'| {claim} | mmin > augmented | ua @ average | {diff:+.4f} | 1/1 |  |' in tables.markdown(
      table)


def test_mmin_criterion_uses_the_critical_t_of_the_number_of_seeds(tmp_path):
  spec = _load('mmin_iemocap4')
  seeds = (0, 1, 2, 3, 4)
  augmented = np.array([0.66, 0.67, 0.65, 0.66, 0.68])
  averages = {'augmented': augmented,  # ahead of full_baseline in every seed
              'full_baseline': np.array([0.65, 0.655, 0.64, 0.65, 0.66]),
              'mmin': np.array([0.66, 0.665, 0.652, 0.655, 0.679])}  # a little behind augmented
  crit = paired.T_CRITICAL[len(seeds) - 1]

  def criterion(averages, workdir):
    for row, values in averages.items():
      for seed in seeds:
        _mmin_run(workdir, row, seed, float(values[seed]))
    table = tables.aggregate(str(workdir), spec, list(spec.rows), seeds)
    table['analysis'] = spec.analysis(str(workdir), spec, table)
    return table, {(c['better'], c['worse'], c['metric']): c for c in table['analysis']['criterion']}

  def t(better, worse):
    diff = averages[better] - averages[worse]
    return diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))

  table, found = criterion(averages, tmp_path / 'close')
  assert set(found) == {('augmented', 'full_baseline', 'ua'), ('augmented', 'full_baseline', 'wa'),
                        ('mmin', 'augmented', 'ua')}
  c = found['augmented', 'full_baseline', 'ua']
  assert c['t_critical'] == crit and c['t'] == pytest.approx(t('augmented', 'full_baseline'))
  assert c['test'] == 'better' and c['t'] > crit and c['criterion_holds']
  c = found['mmin', 'augmented', 'ua']
  assert c['t'] == pytest.approx(t('mmin', 'augmented'))
  assert c['test'] == 'not_worse' and -crit < c['t'] < 0 and c['criterion_holds'] and not c['holds']
  text = tables.markdown(table, spec)
  assert (f"| augmented beats full_baseline | UA | {t('augmented', 'full_baseline'):.2f} | "
          f't > {crit:.2f} | yes |') in text
  assert (f"| mmin is not worse than augmented | UA | {t('mmin', 'augmented'):.2f} | "
          f't > -{crit:.2f} | yes |') in text
  # Clearly worse in every seed but one: the non-inferiority test fails.
  averages['mmin'] = np.array([0.645, *(augmented[1:] - 0.02)])
  table, found = criterion(averages, tmp_path / 'worse')
  c = found['mmin', 'augmented', 'ua']
  assert c['t'] == pytest.approx(t('mmin', 'augmented')) and c['t'] < -crit
  assert not c['criterion_holds']
  assert '| mmin is not worse than augmented | UA |' in tables.markdown(table, spec)


def test_mmin_imagination_ratios_over_seeds(tmp_path):
  spec = _load('mmin_iemocap4')
  seeds = (0, 1)
  ratio = lambda s, k: 0.5 + 0.3 * s + 0.05 * k  # noqa: E731  (seed 1 is above 1 on vt)
  for seed in seeds:
    for row in ('mmin', 'mmin_ae'):  # mmin_ae has no imagination reports
      _mmin_run(tmp_path, row, seed, 0.6)
    (tmp_path / 'mmin' / f'seed={seed}' / 'imagination_mse.json').write_text(json.dumps({
        'conditions': {c: {'ratio_to_train_mean': ratio(seed, k),
                           'ratio_to_zeros': ratio(seed, k) / 2,
                           'mse': {'imagined': 2 * ratio(seed, k)}} for k, c in enumerate(MISSING)},
        'beats_train_mean_everywhere': seed == 0}))
  table = tables.aggregate(str(tmp_path), spec, list(spec.rows), seeds)
  table['analysis'] = spec.analysis(str(tmp_path), spec, table)
  imagination = table['analysis']['imagination']
  assert set(imagination) == {'mmin'}
  assert imagination['mmin']['num_seeds'] == 2
  assert not imagination['mmin']['beats_train_mean_everywhere']  # seed 1's report says no
  for k, c in enumerate(MISSING):
    ratios = np.array([ratio(s, k) for s in seeds])
    cell = imagination['mmin']['conditions'][c]
    assert cell['ratio_to_train_mean']['mean'] == pytest.approx(ratios.mean())
    assert cell['ratio_to_train_mean']['std'] == pytest.approx(ratios.std(ddof=1))
    assert cell['ratio_to_zeros']['mean'] == pytest.approx(ratios.mean() / 2)
    assert cell['mse_imagined']['mean'] == pytest.approx(2 * ratios.mean())
    assert cell['seeds_beating_train_mean'] == int((ratios < 1).sum())
  text = tables.markdown(table, spec)
  assert '**Imagination** (mmin, 2 seeds)' in text and '(mmin_ae' not in text
  by_condition = [np.array([ratio(s, k) for s in seeds]) for k in range(len(MISSING))]
  assert '| / train mean | ' + ' | '.join(f'{r.mean():.4f} ± {r.std(ddof=1):.4f}'
                                          for r in by_condition) + ' |' in text
  assert '| seeds < 1 | ' + ' | '.join(f'{(r < 1).sum()}/2' for r in by_condition) + ' |' in text


# M3ER (launch/tables/m3er.py): two trained networks, the other rows re-evaluate one of them.

def test_m3er_trains_two_rows_and_reevaluates_the_rest():
  spec = _load('m3er', 'iemocap_4')
  cmd = tables.command('/r', spec, 'm3er', 1, python='py')
  assert cmd[1:4] == ['-m', 'mmer_jax.main', '--config=configs/m3er_iemocap.py:synthetic']
  assert '--mode=evaluate' not in cmd and '--config.method.variant=m3er' in cmd
  assert '--workdir=/r/m3er/seed=1' in cmd and '--config.seed=1' in cmd
  cmd = tables.command('/r', _load('m3er', 'ravdess_av'), 'no_proxy_paper_check', 0, python='py')
  assert '--mode=evaluate' in cmd and '--config.method.variant=no_proxy' in cmd
  assert cmd[-1] == '--config.method.check_statistic=correlation'  # the row's own, last
  assert '--config.data.features_dir=../shared/data/ravdess_av' in cmd
  assert {r for r, row in spec.rows.items() if row.mode == 'train'} == {'original_mult', 'm3er'}


def test_m3er_reevaluated_rows_link_the_trained_runs(tmp_path):
  spec = _load('m3er', 'iemocap_4')
  waves = tables.pending(str(tmp_path), spec, ['no_proxy', 'original_mult_check'], [0], python='py')
  workdirs = [[c[4].split('=', 1)[1] for c in wave] for wave in waves]
  assert workdirs == [[f'{tmp_path}/{r}/seed=0' for r in ('original_mult', 'm3er')],
                      [f'{tmp_path}/{r}/seed=0' for r in ('no_proxy', 'original_mult_check')]]
  for row, trained in (('no_proxy', 'm3er'), ('original_mult_check', 'original_mult')):
    (tmp_path / trained / 'seed=0' / 'checkpoints').mkdir(parents=True)
    (tmp_path / trained / 'seed=0' / 'feature_stats.json').write_text('{}')
    for name in ('checkpoints', 'feature_stats.json'):  # the standardisation it was trained with
      link = tmp_path / row / 'seed=0' / name
      assert link.is_symlink() and os.path.samefile(link, tmp_path / trained / 'seed=0' / name)
  (tmp_path / 'm3er' / 'seed=0' / 'results.json').write_text('{}')
  (wave,) = tables.pending(str(tmp_path), spec, ['no_check_no_proxy'], [0], python='py')
  assert [c[4] for c in wave] == [f'--workdir={tmp_path}/no_check_no_proxy/seed=0']  # m3er: done


def test_m3er_trained_in_reevaluates_another_tables_networks(tmp_path):
  spec = _load('m3er', f'iemocap_4,trained_in={tmp_path}/trained')
  (wave,) = tables.pending(str(tmp_path / 'new'), spec, list(spec.rows), [0], python='py')
  assert len(wave) == len(spec.rows) and all('--mode=evaluate' in c for c in wave)
  assert not any(f'{tmp_path}/trained' in a for c in wave for a in c)  # nothing runs there
  for row, trained in (('m3er', 'm3er'), ('original_mult', 'original_mult'),
                       ('no_proxy', 'm3er'), ('original_mult_check_proxy', 'original_mult')):
    for name in ('checkpoints', 'feature_stats.json'):
      assert os.readlink(tmp_path / 'new' / row / 'seed=0' / name) == str(
          tmp_path / 'trained' / trained / 'seed=0' / name)


def test_m3er_means_and_paired_orderings(tmp_path):
  spec = _load('m3er', 'iemocap_4')
  bases = {'m3er': np.array([0.70, 0.72, 0.71]), 'no_proxy': np.array([0.68, 0.71, 0.69])}
  for row, values in bases.items():
    for seed, base in enumerate(values):
      _results(tmp_path / row / f'seed={seed}' / 'results.json', {
          **{c: {'weighted_f1': base - i / 10, 'wa': base - i / 20,
                 'mean_ovr_accuracy': 0.8 - i / 50} for i, c in enumerate(spec.conditions)},
          'a': {'weighted_f1': 0.1}})
  table = tables.aggregate(str(tmp_path), spec, list(spec.rows), [0, 1, 2])
  cells = table['rows']['m3er']['cells']
  assert list(cells) == list(spec.conditions)  # not `a`: outside the table's grid
  assert cells['full']['weighted_f1']['mean'] == pytest.approx(bases['m3er'].mean())
  assert cells['full']['weighted_f1']['std'] == pytest.approx(bases['m3er'].std(ddof=1))
  assert cells['noise=1.0']['wa']['mean'] == pytest.approx(bases['m3er'].mean() - 3 / 20)
  found = [o for o in table['orderings'] if (o['condition'], o['metric']) == ('full', 'weighted_f1')]
  assert len(found) == 1 and (found[0]['better'], found[0]['worse']) == ('m3er', 'no_proxy')
  diff = bases['m3er'] - bases['no_proxy']
  assert found[0]['mean_diff'] == pytest.approx(diff.mean())
  assert found[0]['t'] == pytest.approx(diff.mean() / (diff.std(ddof=1) / np.sqrt(3)))
  assert found[0]['seeds_held'] == 3 and found[0]['holds']
  assert '| m3er > no_proxy | weighted_f1 @ full |' in tables.markdown(table)


# The features table (launch/tables/features.py): fusion and MMIN rows on one feature directory,
# one grid with per-modality rates.

def test_features_grid_means_sample_stds_and_scored_samples(tmp_path):
  spec = _load('features', 'DIR')
  wa = {c: np.array([0.8, 0.7, 0.9]) - 0.05 * k for k, c in enumerate(spec.conditions)}
  samples = {c: 60 + k for k, c in enumerate(spec.conditions)}
  for seed in range(3):
    _results(tmp_path / 'late_fusion' / f'seed={seed}' / 'results.json',
             {c: {'wa': v[seed], 'ua': v[seed] - 0.1} for c, v in wa.items()}, num_samples=samples)
  _results(tmp_path / 'mmin' / 'seed=0' / 'results.json', {c: {'wa': 0.6, 'ua': 0.5} for c in wa})
  table = tables.aggregate(str(tmp_path), spec, ['late_fusion', 'mmin'], [0, 1, 2])
  cells = table['rows']['late_fusion']['cells']
  assert list(cells) == list(spec.conditions)  # the grid, in order
  for c, values in wa.items():
    assert cells[c]['wa']['mean'] == pytest.approx(values.mean())
    assert cells[c]['wa']['std'] == pytest.approx(values.std(ddof=1))
    assert cells[c]['ua']['mean'] == pytest.approx(values.mean() - 0.1)
  assert table['rows']['mmin']['cells']['full']['wa']['std'] is None  # one seed: no spread
  scored = spec.analysis(str(tmp_path), spec, table)
  assert scored['late_fusion'] == samples and scored['mmin'] == dict.fromkeys(wa)


def test_features_rows_and_the_per_modality_rates(tmp_path):
  spec = _load('features', 'DIR')
  assert set(spec.rows) >= {'late_fusion', 'early_fusion', 'late_fusion_augmented',
                            'early_fusion_augmented', 'late_fusion_uneven', 'mmin'}
  assert 'imder' not in spec.rows
  # The per-modality rates are a grid condition of every row (as results.json names it) and the
  # training rates of late_fusion_uneven; the uniform rates follow.
  assert spec.conditions[-5:] == ('rate=a:0.1,v:0.5,t:0.0', 'rate=0.0', 'rate=0.3', 'rate=0.5',
                                  'rate=0.7')
  for row in spec.rows:
    cmd = tables.command(str(tmp_path), spec, row, 0, python='py')
    assert '--config.data.features_dir=DIR' in cmd
    assert '--config.eval.rates=(0.0, 0.3, 0.5, 0.7)' in cmd
    (grid,) = [a for a in cmd if a.startswith('--config.eval.conditions=')]
    assert grid.endswith("'vt', 'rate=a:0.1,v:0.5')")
  cmd = tables.command(str(tmp_path), spec, 'late_fusion_uneven', 0, python='py')
  assert cmd[-2:] == ['--config.train.missing=rate', '--config.train.missing_rates=a:0.1,v:0.5']
  # table.md: a line per row, a column per grid condition.
  for row, wa in (('late_fusion', 0.8), ('mmin', 0.6)):
    for seed in (0, 1):
      _results(tmp_path / row / f'seed={seed}' / 'results.json',
               {c: {'wa': wa, 'ua': wa} for c in spec.conditions})
  lines = tables.markdown(tables.aggregate(str(tmp_path), spec, ['late_fusion', 'mmin'],
                                           [0, 1])).splitlines()
  assert '| row | n | ' + ' | '.join(spec.conditions) + ' |' in lines
  cells = ['0.8000 ± 0.0000'] * len(spec.conditions)
  assert '| late_fusion | 2 | ' + ' | '.join(cells) + ' |' in lines
  assert any(line.startswith('| mmin | 2 | 0.6000') for line in lines)


def test_features_imder_row_runs_the_cpu_variant(tmp_path):
  from configs import imder_mosi  # pylint: disable=g-import-not-at-top
  spec = _load('features', 'DIR,imder')
  cmd = tables.command(str(tmp_path), spec, 'imder', 0, python='py')
  assert '--config=configs/imder_mosi.py:cpu' in cmd
  assert "--config.train.valid_conditions=('a', 'v')" in cmd
  assert not [a for a in cmd if a.startswith('--config.method.')]  # no copy of the settings
  assert spec.rows['imder_zeros_complete'].results_of == ('imder', 'stage1')
  assert tables.command(str(tmp_path), spec, 'imder_zeros_complete', 0) is None
  config = imder_mosi.get_config('cpu')  # what the row trains, before its valid_conditions
  assert config.method.score_channels == (32, 64) and config.method.sampler == 'dpm_solver'


# IMDer (launch/tables/imder_mosi.py): the analysis re-evaluates checkpoints (faked here).

IMDER_METRICS = ('mae', 'acc2', 'f1', 'acc7', 'corr')


def _restored_metrics(run: str, steps: int) -> dict:
  """The fake re-evaluation: MAE 0.9 (imder's checkpoint) or 0.95 (imder_fast's) at 100 steps,
  0.001 more a step fewer; Acc-2 0.5 + 0.001 a step; the rest 0.5."""
  mae = (0.95 if run.startswith('imder_fast') else 0.9) + 0.001 * (100 - steps)
  return {**dict.fromkeys(IMDER_METRICS, 0.5), 'mae': mae, 'acc2': 0.5 + 0.001 * steps}


def _imder_runs(tmp_path, monkeypatch, seeds=(0, 1)) -> list:
  """imder and imder_fast runs (rate-0.5 MAE 0.9 / 0.8 + 0.01 seed, the rest 0.5) and
  `reevaluate.Restored` faked by `_restored_metrics`; returns the list its calls go to."""
  from mmer_jax import reevaluate  # pylint: disable=g-import-not-at-top
  for seed in seeds:
    for row, mae in (('imder', 0.9), ('imder_fast', 0.8)):
      _results(tmp_path / row / f'seed={seed}' / 'results.json', {'rate=0.5': {
          m: mae + 0.01 * seed if m == 'mae' else 0.5 for m in IMDER_METRICS}})
  calls = []

  class Fake:
    def __init__(self, run_dir):
      self.run = os.path.relpath(run_dir, tmp_path)

    def metrics_at(self, rate, changes):
      calls.append((self.run, rate, changes['method.num_steps']))
      return _restored_metrics(self.run, changes['method.num_steps'])
  monkeypatch.setattr(reevaluate, 'Restored', Fake)
  return calls


def test_imder_fast_cost_pairs_fast_with_em100_per_seed(tmp_path, monkeypatch):
  """The IMDer spec's analysis: imder_fast's own rate-0.5 row against both checkpoints
  re-evaluated with Euler-Maruyama 100, paired by seed, kept per seed."""
  spec = _load('imder_mosi')
  calls = _imder_runs(tmp_path, monkeypatch)
  table = tables.aggregate(str(tmp_path), spec, list(spec.rows), [0, 1])
  cost = spec.analysis(str(tmp_path), spec, table)['fast']
  assert calls == [(f'{row}/seed={s}', 0.5, 100) for s in (0, 1) for row in ('imder', 'imder_fast')]
  # fast (0.80, 0.81) - em100 (0.90, 0.90): -0.10, -0.09
  np.testing.assert_allclose(cost['paired']['fast - em100']['mae'],
                             [-0.095, np.std([-0.1, -0.09], ddof=1)], atol=1e-9)
  assert cost['summary']['fast_em100']['mae'][0] == pytest.approx(0.95)
  spec.analysis(str(tmp_path), spec, table)  # kept: no evaluation again
  assert len(calls) == 4


def test_imder_analysis_shows_in_table_md(tmp_path, monkeypatch):
  spec = _load('imder_mosi', 'cpu,nfe=0')
  _imder_runs(tmp_path, monkeypatch)
  table = tables.aggregate(str(tmp_path), spec, list(spec.rows), [0, 1])
  table['analysis'] = spec.analysis(str(tmp_path), spec, table)
  text = tables.markdown(table, spec)
  # The fast block: per metric mean ± sample std over seeds 0, 1, and the paired differences.
  per_seed = {'fast': [{m: 0.8 + 0.01 * s if m == 'mae' else 0.5 for m in IMDER_METRICS}
                       for s in (0, 1)],
              'em100': [_restored_metrics('imder', 100)] * 2,
              'fast_em100': [_restored_metrics('imder_fast', 100)] * 2}
  per_seed.update({f'fast - {n}': [{m: f[m] - o[m] for m in IMDER_METRICS}
                                   for f, o in zip(per_seed['fast'], per_seed[n])]
                   for n in ('em100', 'fast_em100')})
  assert '**`:fast` against Euler-Maruyama 100** (rate 0.5, 2 seeds;' in text
  for name, cells in per_seed.items():
    values = [np.array([c[m] for c in cells]) for m in IMDER_METRICS]
    assert f'| {name} | ' + ' | '.join(f'{v.mean():.4f} ± {v.std(ddof=1):.4f}'
                                        for v in values) + ' |' in text
  # The NFE table: a sampler's NFE k needs k / (score evaluations a step) whole steps (two at
  # least for Euler-Maruyama); MAE / Acc-2 of seed 0's imder checkpoint.
  per_step = {'euler_maruyama': 1, 'pc': 2, 'ode_heun': 2, 'ode_rk4': 4, 'dpm_solver_1': 1,
              'dpm_solver_2': 2}
  nfes = (5, 10, 20, 50, 100)
  assert '| sampler | ' + ' | '.join(map(str, nfes)) + ' |' in text
  for sampler, k in per_step.items():
    cells = []
    for nfe in nfes:
      metrics = _restored_metrics('imder', nfe // k)
      cells.append(f"{metrics['mae']:.3f} / {metrics['acc2']:.3f}" if nfe % k == 0 else '—')
    assert f'| {sampler} | ' + ' | '.join(cells) + ' |' in text
