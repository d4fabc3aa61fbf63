"""Trains MMIN's comparison rows over seeds and writes the paper-shaped table (mean ± std).

  python launch/mmin_table.py --workdir=runs/mmin_table --seeds=0,1,2
  python launch/mmin_table.py --workdir=runs/mmin_table --seeds=0 --override=--config.train.num_epochs=10
  python launch/mmin_table.py --workdir=runs/mmin_table --seeds=0,1,2 \
      --override=--config.train.num_epochs=20 --override=--config.optimizer.constant_epochs=10 \
      --override=--config.stages.stage1.optimizer.b1=0.5 --override=--config.stages.stage1.optimizer.clip_norm=1.0
      # docs/mmin.md's table (its full_baseline row was trained with the main stage's optimiser)
  python launch/mmin_table.py --config=configs/mmin_iemocap.py:synthetic,train_x4 \
      --workdir=runs/mmin_table_x4 --seeds=0,1,2 --override=--config.method.teacher_target=full \
      --override=--config.train.num_epochs=5 --override=--config.optimizer.constant_epochs=3 \
      --override=--config.stages.stage1.train.num_epochs=5 \
      --override=--config.stages.stage1.optimizer.constant_epochs=3 \
      --override=--config.stages.stage1.optimizer.b1=0.5 --override=--config.stages.stage1.optimizer.clip_norm=1.0
      # docs/mmin.md's x4 columns: 4x the training utterances, the same number of steps

Rows: full_baseline (the config's stage 1: early fusion trained on complete data), augmented
(trained on the six patterns and full), mmin, mmin_ae, mmin_nocycle; columns: {a} {v} {t} {a,v} {a,t} {v,t}, their
average, and {a,v,t}; WA and UA on the test split. The MMIN rows reuse the same seed's
full_baseline run as their stage 1 (`--config.method.pretrained_workdir`). Each run is a plain
`python -m mmer_jax.main` command in its own workdir, so an interrupted table resumes where it
stopped. Writes `<workdir>/table.md` and `table.json`.

Below the table come the paper's orderings on the six-condition average (MMIN > augmented >
full_baseline, MMIN > MMIN-AE, MMIN > MMIN-NoCycle): the difference better - worse paired by
seed (the MMIN rows of a seed share that seed's stage 1), its mean and sample std, the number of
seeds where it holds, and the paired t statistic mean / (std / sqrt(n)) (|t| > 4.30 is
significant at 5% for 3 seeds, two-sided; null with a single seed). Then the synthetic criterion
(`CRITERION`): augmented beats full_baseline significantly (UA and WA), and MMIN is not
significantly worse than augmented in UA (t > -t_crit; -2.78 with 5 seeds). Last, for each MMIN
row, the imagination ratios of `imagination_mse.json` (the imagined missing embeddings' MSE over
the train-mean imputer's, per condition, mean ± std over seeds).

  python launch/mmin_table.py --workdir=runs/mmin_talk --rows=mmin --seeds=0,1,2 \
      --stage1_root=runs/mmin_table --override=--config.method.imagination_reduction=sum \
      --override=--config.method.fwd_weight=0.1 --override=--config.method.cycle_weight=0.1
      # the talk's loss weights, reusing another table's stage-1 runs
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

from mmer_jax import paired

_WORKDIR = flags.DEFINE_string('workdir', 'runs/mmin_table', 'Where the runs and the table go.')
_CONFIG = flags.DEFINE_string('config', 'configs/mmin_iemocap.py:synthetic', 'The MMIN config.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (one run per row and seed).')
_ROWS = flags.DEFINE_list('rows', ['full_baseline', 'augmented', 'mmin', 'mmin_ae', 'mmin_nocycle'],
                          'Variants to train, in table order.')
_OVERRIDES = flags.DEFINE_multi_string('override', [], 'Extra --config.x=v arguments for every run.')
_STAGE1_ROOT = flags.DEFINE_string(
    'stage1_root', None, 'Where the MMIN rows find (or train) their seed\'s full_baseline run as '
    'stage 1 (default: --workdir); lets a table of other MMIN settings reuse another table\'s.')

# The paper's claims, as (better, worse) pairs of rows, checked on the six-condition average.
ORDERINGS = (('mmin', 'augmented'), ('augmented', 'full_baseline'), ('mmin', 'mmin_ae'),
             ('mmin', 'mmin_nocycle'))
# The synthetic criterion (issue 11): significance of a paired t over seeds, two-sided 5%.
# (better, worse, metric, test): 'better' needs t > t_crit, 'not_worse' needs t > -t_crit.
CRITERION = (('augmented', 'full_baseline', 'ua', 'better'), ('augmented', 'full_baseline', 'wa', 'better'),
             ('mmin', 'augmented', 'ua', 'not_worse'))
T_CRITICAL = paired.T_CRITICAL  # t_{0.975} by degrees of freedom
COLUMNS = (('a', '{a}'), ('v', '{v}'), ('t', '{t}'), ('av', '{a,v}'), ('at', '{a,t}'), ('vt', '{v,t}'))
MISSING = tuple(c for c, _ in COLUMNS)


def run_dir(root: str, row: str, seed: str) -> str:
  return os.path.join(root, f'{row}_seed{seed}')


def train(root: str, row: str, seed: str) -> dict:
  workdir = run_dir(root, row, seed)
  results = os.path.join(workdir, 'results.json')
  if not os.path.exists(results):
    cmd = [sys.executable, '-m', 'mmer_jax.main', f'--config={_CONFIG.value}', f'--workdir={workdir}',
           f'--config.method.variant={row}', f'--config.seed={seed}', *_OVERRIDES.value]
    if row.startswith('mmin'):
      stage1_root = _STAGE1_ROOT.value or root
      stage1 = run_dir(stage1_root, 'full_baseline', seed)
      train(stage1_root, 'full_baseline', seed)
      cmd.append(f'--config.method.pretrained_workdir={stage1}')
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
  with open(results, encoding='utf-8') as f:
    return json.load(f)


def row_scores(results: dict) -> dict[str, dict[str, float]]:
  """{metric: {column: value}} with the average over the six missing conditions."""
  by_condition = {r['condition']: r['metrics'] for r in results['rows']}
  out = {}
  for metric in ('wa', 'ua'):
    scores = {c: by_condition[c][metric] for c in MISSING}
    scores['average'] = float(np.mean([scores[c] for c in MISSING]))
    scores['full'] = by_condition['full'][metric]
    out[metric] = scores
  return out


def orderings(per_seed: dict[str, list[dict]]) -> list[dict]:
  """The `ORDERINGS` among the trained rows: paired differences of the six-condition average."""
  out = []
  for better, worse in ORDERINGS:
    if better not in per_seed or worse not in per_seed:
      continue
    for metric in ('ua', 'wa'):
      diff = [b[metric]['average'] - w[metric]['average']
              for b, w in zip(per_seed[better], per_seed[worse])]
      out.append({'better': better, 'worse': worse, 'metric': metric,
                  **paired.paired_difference(diff)})
  return out


def criterion(ordering_rows: list[dict]) -> list[dict]:
  """The synthetic criterion on the orderings: each test with its critical t and verdict."""
  out = []
  for better, worse, metric, test in CRITERION:
    for o in ordering_rows:
      if (o['better'], o['worse'], o['metric']) != (better, worse, metric):
        continue
      crit = T_CRITICAL.get(o['num_seeds'] - 1)
      t = o['t']
      held = None if t is None or crit is None else (t > crit if test == 'better' else t > -crit)
      out.append({**o, 'test': test, 't_critical': crit, 'criterion_holds': held})
  return out


def imagination(root: str, rows, seeds) -> dict:
  """Per MMIN row: the imagination MSE ratios (`analysis/imagination_mse.py`) over seeds."""
  out = {}
  for row in rows:
    reports = []
    for seed in seeds:
      path = os.path.join(run_dir(root, row, seed), 'imagination_mse.json')
      if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
          reports.append(json.load(f))
    if not reports or len(reports) != len(seeds):
      continue
    conditions = {}
    for c in MISSING:
      ratios = np.array([r['conditions'][c]['ratio_to_train_mean'] for r in reports])
      zeros = np.array([r['conditions'][c]['ratio_to_zeros'] for r in reports])
      mse = np.array([r['conditions'][c]['mse']['imagined'] for r in reports])
      conditions[c] = {'ratio_to_train_mean': float(ratios.mean()), 'ratio_to_train_mean_std': float(ratios.std()),
                       'ratio_to_zeros': float(zeros.mean()), 'mse_imagined': float(mse.mean()),
                       'seeds_beating_train_mean': int((ratios < 1).sum())}
    out[row] = {'conditions': conditions, 'num_seeds': len(reports),
                'beats_train_mean_everywhere': all(r['beats_train_mean_everywhere'] for r in reports)}
  return out


def _maybe(value: float | None, scale: float = 1.0) -> str:
  return 'n/a' if value is None else f'{scale * value:.2f}'


def markdown(table: dict) -> str:
  keys = list(MISSING) + ['average', 'full']
  names = [n for _, n in COLUMNS] + ['average', '{a,v,t}']
  lines = []
  for metric in ('wa', 'ua'):
    lines += [f'**{metric.upper()}** (mean ± std over seeds {", ".join(table["seeds"])})', '',
              '| method | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
    for row in table['rows']:
      cells = [f"{table['mean'][row][metric][k]:.4f} ± {table['std'][row][metric][k]:.4f}" for k in keys]
      lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  if table.get('orderings'):
    lines += ['**Orderings** (six-condition average; difference better - worse, paired by seed, '
              'in points)', '', '| ordering | metric | mean ± sample std | seeds held | t | holds |',
              '|---|---|---|---|---|---|']
    for o in table['orderings']:
      lines.append(f"| {o['better']} > {o['worse']} | {o['metric'].upper()} | "
                   f"{100 * o['mean_diff']:+.2f} ± {_maybe(o['std_diff'], 100)} | "
                   f"{o['seeds_held']}/{o['num_seeds']} | {_maybe(o['t'])} | {'yes' if o['holds'] else 'no'} |")
    lines.append('')
  if table.get('criterion'):
    lines += ['**The synthetic criterion** (paired t over seeds, two-sided 5%)', '',
              '| test | metric | t | needs | holds |', '|---|---|---|---|---|']
    for c in table['criterion']:
      need = (f"t > {c['t_critical']:.2f}" if c['test'] == 'better' else f"t > -{c['t_critical']:.2f}") \
          if c['t_critical'] else 'n/a'
      verb = 'beats' if c['test'] == 'better' else 'is not worse than'
      held = 'n/a' if c['criterion_holds'] is None else ('yes' if c['criterion_holds'] else 'no')
      lines.append(f"| {c['better']} {verb} {c['worse']} | {c['metric'].upper()} | {_maybe(c['t'])} | "
                   f'{need} | {held} |')
    lines.append('')
  for row, imag in (table.get('imagination') or {}).items():
    lines += [f'**Imagination** ({row}, test split, {imag["num_seeds"]} seeds): MSE of the imagined '
              'missing embeddings / MSE of the train-mean imputer (and of zeros)', '',
              '| | ' + ' | '.join(n for _, n in COLUMNS) + ' |', '|---|' + '---|' * len(COLUMNS)]
    cond = imag['conditions']
    lines.append('| / train mean | ' + ' | '.join(
        f"{cond[c]['ratio_to_train_mean']:.3f} ± {cond[c]['ratio_to_train_mean_std']:.3f}" for c in MISSING) + ' |')
    lines.append('| / zeros | ' + ' | '.join(f"{cond[c]['ratio_to_zeros']:.3f}" for c in MISSING) + ' |')
    lines.append('| seeds < 1 | ' + ' | '.join(
        f"{cond[c]['seeds_beating_train_mean']}/{imag['num_seeds']}" for c in MISSING) + ' |')
    lines.append('')
  return '\n'.join(lines)


def main(argv):
  del argv
  root = _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  per_seed = {row: [row_scores(train(root, row, s)) for s in _SEEDS.value] for row in _ROWS.value}
  table = {'config': _CONFIG.value, 'seeds': _SEEDS.value, 'rows': _ROWS.value, 'mean': {}, 'std': {}}
  for row, scores in per_seed.items():
    table['mean'][row], table['std'][row] = {}, {}
    for metric in ('wa', 'ua'):
      keys = scores[0][metric].keys()
      table['mean'][row][metric] = {k: float(np.mean([s[metric][k] for s in scores])) for k in keys}
      table['std'][row][metric] = {k: float(np.std([s[metric][k] for s in scores])) for k in keys}
  table['orderings'] = orderings(per_seed)
  table['criterion'] = criterion(table['orderings'])
  table['imagination'] = imagination(root, [r for r in _ROWS.value if r.startswith('mmin')], _SEEDS.value)
  text = markdown(table)
  with open(os.path.join(root, 'table.json'), 'w', encoding='utf-8') as f:
    json.dump(table, f, indent=2)
  with open(os.path.join(root, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  app.run(main)
