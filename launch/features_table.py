"""Trains the bring-your-own-features rows on one feature directory over seeds; writes the table.

  python launch/features_table.py --features_dir=../shared/data/ravdess_av --workdir=runs/ravdess_table
  python launch/features_table.py --features_dir=DIR --rows=late_fusion,early_fusion --seeds=0,1,2,3,4

Rows (`ROWS`): late and early fusion (`configs/fusion_features.py`) trained on complete data and
with random missing patterns (`train.missing=patterns_and_full`), late fusion trained with
per-modality missing rates, and MMIN (`configs/mmin_iemocap.py` as it is, both stages); on
request (`--rows=`) IMDer's `cpu` variant (`imder`) and its stage 1 zero-filled
(`imder_zeros_complete`, read from the imder run). Every
row is evaluated on the same grid: the conditions the directory can express, the uniform missing
rates, and the per-modality rates of `--uneven` (e.g. faces lost more often than voices). Each
run is a plain `python -m mmer_jax.main` command in `<workdir>/<row>/seed_<k>`, so an interrupted
table resumes where it stopped. Writes `<workdir>/table.md` and `table.json`: per row and
condition the mean ± sample std over seeds of accuracy (WA) and UA, and the scored sample count.
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

FUSION = 'configs/fusion_features.py'
ROWS = {  # name -> (config, overrides)
    'late_fusion': (FUSION, ['--config.method.name=late_fusion']),
    'early_fusion': (FUSION, ['--config.method.name=early_fusion']),
    'late_fusion_augmented': (FUSION, ['--config.method.name=late_fusion',
                                       '--config.train.missing=patterns_and_full']),
    'early_fusion_augmented': (FUSION, ['--config.method.name=early_fusion',
                                        '--config.train.missing=patterns_and_full']),
    'late_fusion_uneven': (FUSION, ['--config.method.name=late_fusion', '--config.train.missing=rate',
                                    '--config.train.missing_rates={uneven}']),
    'mmin': ('configs/mmin_iemocap.py', []),
    # IMDer's `cpu` variant (configs/imder_mosi.py `cpu_scale`, as launch/imder_table.py runs it:
    # two-level score U-Nets, two RCABs, DPM-Solver draws), classification with the MulT head;
    # selection pooled over the one-modality conditions (on audio + visual features: each
    # modality recovered once).
    'imder': ('configs/imder_mosi.py:cpu', ["--config.train.valid_conditions=('a', 'v')"]),
}
# Rows read from another row's run: its complete-data stage 1 with the missing projections
# zero-filled at test (IMDer's no-recovery row; paired with it by seed, nothing retrained).
DERIVED = {'imder_zeros_complete': ('imder', 'stage1')}
RATES = (0.0, 0.3, 0.5, 0.7)


def define_flags():
  """The command line (defined when run as a script, so tests can import the pure parts)."""
  return {
      'features_dir': flags.DEFINE_string('features_dir', None, 'The feature directory.',
                                          required=True),
      'workdir': flags.DEFINE_string('workdir', 'runs/features_table', 'Where the runs and the '
                                     'table go.'),
      'seeds': flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (one run per row and seed).'),
      'uneven': flags.DEFINE_string('uneven', 'a:0.1,v:0.5', 'Per-modality rates: a grid '
                                    'condition, and the training rates of late_fusion_uneven.'),
      'override': flags.DEFINE_multi_string('override', [], 'Extra --config.x=v arguments for '
                                            'every run.'),
      'rows': flags.DEFINE_list('rows', [r for r in ROWS if r != 'imder'],
                                'Rows to train, in table order (also: imder, '
                                'imder_zeros_complete).'),
  }


def train(root: str, row: str, seed: str, *, features_dir: str, uneven: str,
          overrides=()) -> dict:
  """Runs (or resumes, or skips when finished) one row and seed; returns its results.json."""
  if row in DERIVED:
    source, stage = DERIVED[row]
    train(root, source, seed, features_dir=features_dir, uneven=uneven, overrides=overrides)
    with open(os.path.join(root, source, f'seed_{seed}', stage, 'results.json'),
              encoding='utf-8') as f:
      return json.load(f)
  workdir = os.path.join(root, row, f'seed_{seed}')
  results = os.path.join(workdir, 'results.json')
  if not os.path.exists(results):
    config, row_overrides = ROWS[row]
    conditions = ('full', 'a', 'v', 't', 'av', 'at', 'vt', f'rate={uneven}')
    command = [sys.executable, '-m', 'mmer_jax.main', f'--config={config}',
               f'--config.data.features_dir={features_dir}', f'--config.seed={seed}',
               f'--config.eval.conditions={conditions!r}', f'--config.eval.rates={RATES!r}',
               f'--workdir={workdir}',
               *[o.format(uneven=uneven) for o in row_overrides], *overrides]
    print(' '.join(command), flush=True)
    subprocess.run(command, check=True)
  with open(results, encoding='utf-8') as f:
    return json.load(f)


def aggregate(per_seed: dict[str, list[dict]]) -> dict:
  """{row: {condition: {metric: [mean, std], 'n': count}}} over seeds (sample std; 0 for one)."""
  table = {}
  for row, runs in per_seed.items():
    table[row] = {}
    for condition in [r['condition'] for r in runs[0]['rows']]:
      found = [next(r for r in run['rows'] if r['condition'] == condition) for run in runs]
      cell = {}
      for metric in ('wa', 'ua'):
        values = np.array([f['metrics'][metric] for f in found])
        cell[metric] = [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]
      cell['n'] = found[0].get('num_samples')
      table[row][condition] = cell
  return table


def markdown(table: dict, seeds) -> str:
  conditions = list(next(iter(table.values())))
  lines = [f'Test accuracy (WA), mean ± std over seeds {",".join(seeds)}; UA in the JSON.', '',
           '| row | ' + ' | '.join(conditions) + ' |', '|---|' + '---|' * len(conditions)]
  for row, cells in table.items():
    lines.append(f'| {row} | ' + ' | '.join(
        f'{cells[c]["wa"][0]:.3f} ± {cells[c]["wa"][1]:.3f}' for c in conditions) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv, flag_values):
  del argv
  v = {name: flag.value for name, flag in flag_values.items()}
  root = v['workdir']
  per_seed = {row: [train(root, row, seed, features_dir=v['features_dir'], uneven=v['uneven'],
                          overrides=v['override']) for seed in v['seeds']] for row in v['rows']}
  table = aggregate(per_seed)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'table.json'), 'w', encoding='utf-8') as f:
    json.dump({'features_dir': v['features_dir'], 'seeds': v['seeds'], 'table': table}, f,
              indent=1)
  text = markdown(table, v['seeds'])
  with open(os.path.join(root, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  _FLAGS = define_flags()
  app.run(lambda argv: main(argv, _FLAGS))
