"""MMIN's comparison rows on synthetic IEMOCAP-4 (docs/mmin.md).

Rows: full_baseline (the config's stage 1 alone: early fusion on complete data), augmented
(trained on the six patterns and full), mmin, mmin_ae, mmin_nocycle; each MMIN row starts from
the same seed's full_baseline run (`--config.method.pretrained_workdir={run:full_baseline}`).
WA and UA on the six missing conditions, full, and the six-condition `average`; the paper's
orderings on the average, paired by seed. The analysis: the synthetic criterion (`CRITERION`)
and, per MMIN row, the imagination ratios of `imagination_mse.json` (the imagined missing
embeddings' MSE over the train-mean imputer's and over zeros', per condition, over seeds), both
also in table.md.
`spec('synthetic,train_x4')`: another variant of the config (docs/mmin.md's x4 columns).
"""

import json
import os

from mmer_jax import compare
from mmer_jax import tables

CONFIG = 'configs/mmin_iemocap.py'
MISSING = ('a', 'v', 't', 'av', 'at', 'vt')
MMIN_ROWS = ('mmin', 'mmin_ae', 'mmin_nocycle')
ORDERINGS = (('mmin', 'augmented', 'MMIN beats training on missing data'),
             ('augmented', 'full_baseline', 'training on missing data helps'),
             ('mmin', 'mmin_ae', 'the CRA beats a plain autoencoder'),
             ('mmin', 'mmin_nocycle', 'the cycle loss helps'))
# The synthetic criterion (issue 11) on the orderings' paired t, two-sided 5%: (better, worse,
# metric, test); 'better' needs t > t_crit, 'not_worse' needs t > -t_crit.
CRITERION = (('augmented', 'full_baseline', 'ua', 'better'),
             ('augmented', 'full_baseline', 'wa', 'better'),
             ('mmin', 'augmented', 'ua', 'not_worse'))


def criterion(orderings: list[dict]) -> list[dict]:
  """The `CRITERION` tests on the table's orderings of the average: each with its verdict."""
  out = []
  for better, worse, metric, test in CRITERION:
    for o in orderings:
      if (o['better'], o['worse'], o['metric'], o['condition']) != (better, worse, metric,
                                                                     'average'):
        continue
      t, crit = o['t'], o['t_critical']
      held = None if t is None or crit is None else (t > crit if test == 'better' else t > -crit)
      out.append({**o, 'test': test, 'criterion_holds': held})
  return out


def imagination(workdir: str, spec: tables.Spec, table: dict) -> dict:
  """Per MMIN row whose runs all have `imagination_mse.json`: per condition the ratios to the
  train-mean imputer and to zeros and the imagined MSE over seeds (`compare.summarize`)."""
  out = {}
  for row in MMIN_ROWS:
    seeds = table['rows'].get(row, {}).get('seeds', [])
    paths = [os.path.join(tables.run_dir(workdir, spec, row, s), 'imagination_mse.json')
             for s in seeds]
    if not seeds or not all(os.path.exists(p) for p in paths):
      continue
    reports = []
    for path in paths:
      with open(path, encoding='utf-8') as f:
        reports.append(json.load(f))
    conditions = {}
    for c in MISSING:
      found = [r['conditions'][c] for r in reports]
      conditions[c] = {
          'ratio_to_train_mean': compare.summarize(f['ratio_to_train_mean'] for f in found),
          'ratio_to_zeros': compare.summarize(f['ratio_to_zeros'] for f in found),
          'mse_imagined': compare.summarize(f['mse']['imagined'] for f in found),
          'seeds_beating_train_mean': sum(f['ratio_to_train_mean'] < 1 for f in found)}
    out[row] = {'conditions': conditions, 'num_seeds': len(reports),
                'beats_train_mean_everywhere': all(r['beats_train_mean_everywhere']
                                                   for r in reports)}
  return out


def analysis(workdir: str, spec: tables.Spec, table: dict) -> dict:
  return {'criterion': criterion(table['orderings']),
          'imagination': imagination(workdir, spec, table)}


def analysis_markdown(analysis: dict) -> str:
  """table.md's text of the analysis: the criterion's verdicts, then per MMIN row the
  imagination ratios (mean ± sample std over seeds) and the seeds below 1."""
  lines = []
  if analysis.get('criterion'):
    lines += ['**The synthetic criterion** (paired t over seeds on the average, two-sided 5%)', '',
              '| test | metric | t | needs | holds |', '|---|---|---|---|---|']
    for c in analysis['criterion']:
      sign, verb = ('', 'beats') if c['test'] == 'better' else ('-', 'is not worse than')
      need = 'n/a' if c['t_critical'] is None else f"t > {sign}{c['t_critical']:.2f}"
      t = 'n/a' if c['t'] is None else f"{c['t']:.2f}"
      held = {None: 'n/a', True: 'yes', False: 'no'}[c['criterion_holds']]
      lines.append(f"| {c['better']} {verb} {c['worse']} | {c['metric'].upper()} | {t} | "
                   f'{need} | {held} |')
    lines.append('')
  for row, imag in analysis.get('imagination', {}).items():
    cond, n = imag['conditions'], imag['num_seeds']
    lines += [f'**Imagination** ({row}, {n} seeds): MSE of the imagined missing embeddings / MSE '
              "of the train-mean imputer's (and of zeros')", '',
              '| | ' + ' | '.join(MISSING) + ' |', '|---|' + '---|' * len(MISSING)]
    for name, key in (('/ train mean', 'ratio_to_train_mean'), ('/ zeros', 'ratio_to_zeros')):
      lines.append(f'| {name} | ' + ' | '.join(compare.format_cell(cond[c][key], n)
                                             for c in MISSING) + ' |')
    lines += ['| seeds < 1 | ' + ' | '.join(f"{cond[c]['seeds_beating_train_mean']}/{n}"
                                           for c in MISSING) + ' |', '']
  return '\n'.join(lines)


def spec(variant: str = 'synthetic') -> tables.Spec:
  rows = {r: tables.Row(overrides=(f'--config.method.variant={r}',))
          for r in ('full_baseline', 'augmented')}
  rows.update({r: tables.Row(overrides=(
      f'--config.method.variant={r}', '--config.method.pretrained_workdir={run:full_baseline}'))
               for r in MMIN_ROWS})
  return tables.Spec(
      name=f'MMIN on IEMOCAP-4 ({variant})', config=f'{CONFIG}:{variant}', rows=rows,
      conditions=(*MISSING, 'full'), metrics=('wa', 'ua'), derived={'average': MISSING},
      orderings=tuple(tables.Ordering(b, w, m, 'average', claim) for b, w, claim in ORDERINGS
                      for m in ('ua', 'wa')),
      analysis=analysis, analysis_markdown=analysis_markdown)
