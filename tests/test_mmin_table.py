"""The MMIN table launcher's pure parts: per-run scores and the paired ordering checks."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / 'launch' / 'mmin_table.py'
_SPEC = importlib.util.spec_from_file_location('mmin_table', _PATH)
mmin_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mmin_table)


def _results(ua: dict[str, float], wa_shift: float = 0.0) -> dict:
  return {'rows': [{'condition': c, 'metrics': {'ua': v, 'wa': v + wa_shift}} for c, v in ua.items()]}


def _scores(average: float, full: float = 0.8) -> dict:
  """A run whose six missing conditions all score `average`."""
  return {m: {**{c: average for c in mmin_table.MISSING}, 'average': average, 'full': full}
          for m in ('ua', 'wa')}


def test_row_scores_average_the_six_missing_conditions_only():
  ua = {'full': 0.9, 'a': 0.6, 'v': 0.4, 't': 0.7, 'av': 0.65, 'at': 0.75, 'vt': 0.72}
  scores = mmin_table.row_scores(_results(ua, wa_shift=0.01))
  assert scores['ua']['average'] == pytest.approx(np.mean([0.6, 0.4, 0.7, 0.65, 0.75, 0.72]))
  assert scores['ua']['full'] == 0.9 and scores['wa']['full'] == pytest.approx(0.91)


def test_orderings_are_paired_by_seed():
  per_seed = {'mmin': [_scores(v) for v in (0.66, 0.67, 0.65)],
              'augmented': [_scores(v) for v in (0.65, 0.66, 0.66)],
              'full_baseline': [_scores(v) for v in (0.60, 0.61, 0.62)]}
  checks = {(o['better'], o['worse'], o['metric']): o for o in mmin_table.orderings(per_seed)}
  # Rows that were not trained (mmin_ae, mmin_nocycle) are skipped.
  assert set(checks) == {(b, w, m) for b, w in (('mmin', 'augmented'), ('augmented', 'full_baseline'))
                         for m in ('ua', 'wa')}
  o = checks['mmin', 'augmented', 'ua']
  diff = np.array([0.01, 0.01, -0.01])
  assert o['mean_diff'] == pytest.approx(diff.mean()) and o['std_diff'] == pytest.approx(diff.std(ddof=1))
  assert o['t'] == pytest.approx(diff.mean() / (diff.std(ddof=1) / np.sqrt(3)))
  assert (o['seeds_held'], o['num_seeds'], o['holds']) == (2, 3, True)
  o = checks['augmented', 'full_baseline', 'wa']
  assert o['seeds_held'] == 3 and o['mean_diff'] == pytest.approx(0.0466667, abs=1e-6)
  # An ordering that fails on average is reported as not holding.
  per_seed['mmin'] = [_scores(v) for v in (0.64, 0.65, 0.65)]
  o = {(o['better'], o['worse'], o['metric']): o for o in mmin_table.orderings(per_seed)}
  assert not o['mmin', 'augmented', 'ua']['holds']


def test_markdown_lists_the_orderings():
  per_seed = {'mmin': [_scores(0.66), _scores(0.67)], 'augmented': [_scores(0.65), _scores(0.64)]}
  table = {'seeds': ['0', '1'], 'rows': list(per_seed), 'orderings': mmin_table.orderings(per_seed),
           'mean': {r: _scores(np.mean([s['ua']['average'] for s in v])) for r, v in per_seed.items()},
           'std': {r: _scores(0.0, 0.0) for r in per_seed}}
  text = mmin_table.markdown(table)
  assert '| mmin > augmented | UA | +2.00 ± 1.41 | 2/2 |' in text
  # One seed: no spread and no t, written as null (valid JSON) and n/a.
  one = mmin_table.orderings({r: v[:1] for r, v in per_seed.items()})
  assert one[0]['std_diff'] is None and one[0]['t'] is None and one[0]['holds']
  text = mmin_table.markdown(dict(table, orderings=one))
  assert '| mmin > augmented | UA | +1.00 ± n/a | 1/1 | n/a | yes |' in text


def test_criterion_uses_the_critical_t_of_the_number_of_seeds():
  # 5 seeds: augmented ahead of full_baseline in every seed; MMIN a little behind augmented.
  per_seed = {'augmented': [_scores(v) for v in (0.66, 0.67, 0.65, 0.66, 0.68)],
              'full_baseline': [_scores(v) for v in (0.65, 0.655, 0.64, 0.65, 0.66)],
              'mmin': [_scores(v) for v in (0.66, 0.665, 0.652, 0.655, 0.679)]}
  crit = {(c['better'], c['worse'], c['metric']): c for c in mmin_table.criterion(mmin_table.orderings(per_seed))}
  assert set(crit) == {('augmented', 'full_baseline', 'ua'), ('augmented', 'full_baseline', 'wa'),
                       ('mmin', 'augmented', 'ua')}
  c = crit['augmented', 'full_baseline', 'ua']
  assert c['t_critical'] == pytest.approx(2.776) and c['t'] > 2.776 and c['criterion_holds']
  c = crit['mmin', 'augmented', 'ua']
  assert c['test'] == 'not_worse' and -2.776 < c['t'] < 0 and c['criterion_holds'] and not c['holds']
  # Clearly worse in every seed: the non-inferiority test fails.
  per_seed['mmin'] = [_scores(v - 0.02) for v in (0.66, 0.67, 0.65, 0.66, 0.68)]
  per_seed['mmin'][0] = _scores(0.645)
  crit = {(c['better'], c['worse'], c['metric']): c for c in mmin_table.criterion(mmin_table.orderings(per_seed))}
  assert crit['mmin', 'augmented', 'ua']['t'] < -2.776 and not crit['mmin', 'augmented', 'ua']['criterion_holds']
  assert '| augmented beats full_baseline | UA |' in mmin_table.markdown(
      {'seeds': ['0'], 'rows': [], 'mean': {}, 'std': {}, 'criterion': list(crit.values())})


def test_imagination_ratios_are_averaged_over_seeds(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  for seed, ratio in (('0', 0.5), ('1', 0.7)):
    run = tmp_path / f'mmin_seed{seed}'
    run.mkdir()
    conditions = {c: {'ratio_to_train_mean': ratio, 'ratio_to_zeros': ratio / 2, 'mse': {'imagined': ratio}}
                  for c in mmin_table.MISSING}
    (run / 'imagination_mse.json').write_text(json.dumps(
        {'conditions': conditions, 'beats_train_mean_everywhere': True}))
  out = mmin_table.imagination(str(tmp_path), ['mmin', 'mmin_ae'], ['0', '1'])
  assert set(out) == {'mmin'}  # mmin_ae has no reports
  a = out['mmin']['conditions']['a']
  assert a['ratio_to_train_mean'] == pytest.approx(0.6) and a['seeds_beating_train_mean'] == 2
  assert out['mmin']['beats_train_mean_everywhere']
