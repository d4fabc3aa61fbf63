"""M3ER's ablation table over seeds, clean and with noise-replaced modalities (mean ± std).

  python launch/m3er_table.py --dataset=iemocap_4 --workdir=runs/m3er_table_iemocap4 --seeds=0,1,2
  python launch/m3er_table.py --dataset=ravdess_av --workdir=runs/m3er_table_ravdess --seeds=0,1,2

Rows (`ROWS`): two trained networks per seed and four ways to run them.
  original_mult        trained with the original multiplicative loss (Liu et al.); no check, no proxy
  m3er                 trained with M3ER's loss; modality check (the config's statistic) and proxies
  no_proxy             m3er's network with the check only
  no_check_no_proxy    m3er's network with neither
  m3er_paper_check, no_proxy_paper_check
                       as m3er and no_proxy, with the paper's correlation statistic for the check
  original_mult_check, original_mult_check_proxy
                       original_mult's network with the check, and with the check and proxies
The check and the proxies act at inference only (the network is trained on the batch's modality
mask), so the rows after the two trained ones re-evaluate a selected checkpoint (`--mode=evaluate` in a
workdir whose checkpoints link to m3er's) instead of training the same network again: their
differences are the parts', not the seeds'.

`--trained_in=DIR` trains nothing: every row re-evaluates the checkpoints of the table in DIR (the
same parts under another corruption, e.g. `--override=--config.eval.noise_replace=True`).

Each run is a plain `python -m mmer_jax.main` command in `<workdir>/<row>_seed<k>`; one whose
results.json exists is not run again. Writes `<workdir>/table.md` and `table.json`: per row and
condition (`CONDITIONS`: complete test data and the `noise=<f>` rows) weighted F1, WA and the
paper's mean one-vs-rest accuracy (MA), mean ± sample std over seeds; then the paper's orderings
(`ORDERINGS`) paired by seed (mmer_jax/paired.py).
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

from mmer_jax import paired

CONFIG = 'configs/m3er_iemocap.py'
DATASETS = {  # --dataset -> (config, overrides)
    'iemocap_4': (CONFIG + ':synthetic', ()),
    'mosei_emotions': ('configs/m3er_mosei.py:synthetic', ()),
    # 240 training clips: batches of 32 (the paper's 256 is one step per epoch), patience 20.
    'ravdess_av': (CONFIG, ('--config.data.name=features_dir', '--config.data.standardize=True',
                            '--config.data.features_dir={data_root}/ravdess_av',
                            '--config.data.batch_size=32', '--config.train.patience=20')),
}
# row -> (its variant, the trained row whose checkpoint it re-evaluates or None, own overrides)
ROW_SPECS = {
    'original_mult': ('original_mult', None, ()),
    'm3er': ('m3er', None, ()),
    'no_proxy': ('no_proxy', 'm3er', ()),
    'no_check_no_proxy': ('no_check_no_proxy', 'm3er', ()),
    'm3er_paper_check': ('m3er', 'm3er', ('--config.method.check_statistic=correlation',)),
    'no_proxy_paper_check': ('no_proxy', 'm3er', ('--config.method.check_statistic=correlation',)),
    # The parts on the network trained with the original loss (which trains better here).
    'original_mult_check': ('original_mult', 'original_mult', ('--config.method.modality_check=True',)),
    'original_mult_check_proxy': ('original_mult', 'original_mult', (
        '--config.method.modality_check=True', '--config.method.proxy=True')),
}
ROWS = tuple(ROW_SPECS)
# What a re-evaluated row takes from the trained one: its checkpoints and the standardisation
# statistics it was trained with.
LINKED = ('checkpoints', 'feature_stats.json')
CONDITIONS = ('full', 'noise=0.3', 'noise=0.5', 'noise=1.0')
METRICS = (('weighted_f1', 'wF1'), ('wa', 'WA'), ('mean_ovr_accuracy', 'MA'))
# (better, worse) as the paper reports them; checked on every condition, on weighted F1 and MA.
ORDERINGS = (('m3er', 'no_proxy'), ('no_proxy', 'no_check_no_proxy'),
             ('m3er', 'no_check_no_proxy'), ('no_check_no_proxy', 'original_mult'),
             ('original_mult_check_proxy', 'original_mult_check'),
             ('original_mult_check', 'original_mult'))
ORDERING_METRICS = ('weighted_f1', 'mean_ovr_accuracy')


def define_flags():
  flags.DEFINE_string('workdir', None, 'Root of the runs and the table.', required=True)
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds.')
  flags.DEFINE_enum('dataset', 'iemocap_4', list(DATASETS), 'Which data.')
  flags.DEFINE_string('data_root', '../shared/data', 'Where ravdess_av lives.')
  flags.DEFINE_multi_string('override', [], 'Extra --config.* flags for every run.')
  flags.DEFINE_string('trained_in', None, 'Train nothing: take the trained rows\' checkpoints from '
                      'this table workdir and re-evaluate every row (e.g. with another '
                      '--override=--config.eval.noise_replace=True).')


def run_dir(root: str, row: str, seed: str) -> str:
  return os.path.join(root, f'{row}_seed{seed}')


def command(root: str, row: str, seed: str, *, dataset: str, data_root: str, overrides=(),
            trained_in: str | None = None) -> list[str]:
  """The `python -m mmer_jax.main` command of one row and seed."""
  config, data = DATASETS[dataset]
  variant, trained_from, own = ROW_SPECS[row]
  mode = ['--mode=evaluate'] if trained_from or trained_in else []
  return [sys.executable, '-m', 'mmer_jax.main', f'--config={config}', *mode,
          f'--workdir={run_dir(root, row, seed)}', f'--config.seed={seed}',
          *(d.format(data_root=data_root) for d in data), f'--config.method.variant={variant}',
          *overrides, *own]


def run(root: str, row: str, seed: str, **kwargs) -> dict:
  """Trains (or evaluates) one row and seed unless its results.json exists; returns it."""
  workdir = run_dir(root, row, seed)
  results = os.path.join(workdir, 'results.json')
  if not os.path.exists(results):
    trained_from = ROW_SPECS[row][1]
    source = None
    if trained_from:  # the trained row's checkpoints (and feature statistics), linked
      run(root, trained_from, seed, **kwargs)
      source = run_dir(root, trained_from, seed)
    elif kwargs.get('trained_in'):
      source = run_dir(kwargs['trained_in'], row, seed)
    if source:
      os.makedirs(workdir, exist_ok=True)
      for name in LINKED:
        link = os.path.join(workdir, name)
        if os.path.exists(os.path.join(source, name)) and not os.path.lexists(link):
          os.symlink(os.path.abspath(os.path.join(source, name)), link)
    cmd = command(root, row, seed, **kwargs)
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
  with open(results, encoding='utf-8') as f:
    return json.load(f)


def scores(results: dict) -> dict[str, dict[str, float]]:
  """{condition: {metric: value}} of the tabulated conditions."""
  by_condition = {r['condition']: r['metrics'] for r in results['rows']}
  missing = [c for c in CONDITIONS if c not in by_condition]
  if missing:
    raise ValueError(f'results.json lacks the rows {missing} (config.eval.noise_fractions?)')
  return {c: {m: float(by_condition[c][m]) for m, _ in METRICS} for c in CONDITIONS}


def make_table(per_seed: dict[str, list[dict]], seeds) -> dict:
  rows = {}
  for row, runs in per_seed.items():
    rows[row] = {c: {m: [float(np.mean([r[c][m] for r in runs])),
                         float(np.std([r[c][m] for r in runs], ddof=1)) if len(runs) > 1 else None]
                     for m, _ in METRICS} for c in CONDITIONS}
  orderings = []
  for better, worse in ORDERINGS:
    if better in per_seed and worse in per_seed:
      for c in CONDITIONS:
        for m in ORDERING_METRICS:
          diff = [b[c][m] - w[c][m] for b, w in zip(per_seed[better], per_seed[worse])]
          orderings.append({'better': better, 'worse': worse, 'condition': c, 'metric': m,
                            **paired.paired_difference(diff)})
  return {'seeds': list(seeds), 'rows': rows, 'per_seed': per_seed, 'orderings': orderings}


def _cell(value) -> str:
  mean, std = value
  return f'{100 * mean:.1f}' + (f' ± {100 * std:.1f}' if std is not None else '')


def markdown(table: dict, title: str) -> str:
  lines = [f'# {title} (test split; mean ± std over seeds {", ".join(table["seeds"])})', '',
           '| row | ' + ' | '.join(f'{c} {n}' for c in CONDITIONS for _, n in METRICS) + ' |',
           '|---|' + '---|' * (len(CONDITIONS) * len(METRICS))]
  for row, cells in table['rows'].items():
    lines.append(f'| {row} | ' + ' | '.join(_cell(cells[c][m]) for c in CONDITIONS for m, _ in METRICS) + ' |')
  lines += ['', '| better > worse | condition | metric | mean diff | seeds held | t (crit) |',
            '|---|---|---|---|---|---|']
  for o in table['orderings']:
    t = '' if o['t'] is None else f"{o['t']:.2f} ({o['t_critical']})" + (' *' if o['significant'] else '')
    lines.append(f"| {o['better']} > {o['worse']} | {o['condition']} | {o['metric']} | "
                 f"{100 * o['mean_diff']:+.2f} | {o['seeds_held']}/{o['num_seeds']} | {t} |")
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  f = flags.FLAGS
  kwargs = {'dataset': f.dataset, 'data_root': f.data_root, 'overrides': tuple(f.override),
            'trained_in': f.trained_in}
  per_seed = {row: [scores(run(f.workdir, row, seed, **kwargs)) for seed in f.seeds] for row in ROWS}
  table = make_table(per_seed, f.seeds)
  os.makedirs(f.workdir, exist_ok=True)
  with open(os.path.join(f.workdir, 'table.json'), 'w', encoding='utf-8') as out:
    json.dump(table, out, indent=1)
  text = markdown(table, f'M3ER ablation on {f.dataset}')
  with open(os.path.join(f.workdir, 'table.md'), 'w', encoding='utf-8') as out:
    out.write(text)
  print(text)


if __name__ == '__main__':
  define_flags()
  app.run(main)
