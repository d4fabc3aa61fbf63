"""Trains MMGCN's comparison rows over seeds and writes the paper-shaped table (mean ± std).

  python launch/mmgcn_table.py --workdir=runs/mmgcn_table --seeds=0,1,2
  python launch/mmgcn_table.py --workdir=runs/mmgcn_table --seeds=0 --rows=avt,t,no_speaker \
      --override=--config.train.num_epochs=5
  python launch/mmgcn_table.py --workdir=runs/mmgcn_table_authors --seeds=0,1,2 \
      --override=--config.method.gcn_form=authors  # every row with the authors' GCN layer

Rows (`ROWS`, in table order; each the config plus the row's own overrides, which come after
`--override` so that a row keeps its meaning):
  a, v, t, at, vt, avt     `method.modalities`, at the config's depth; each trains and tests with
                           only those modalities (avt is MMGCN itself)
  depth1 ... depth64       avt with `method.num_layers` = 1, 2, 4, 8, 16, 32, 64; the depth row at
                           the depth avt runs at (4 in `configs/mmgcn_iemocap.py:synthetic`) is
                           avt's run: it reuses avt's workdir instead of training twice
  no_speaker               avt without speaker embeddings (`method.speaker_nodes=none`)
  early_fusion, late_fusion, gated_attention
                           the paper's fusion baselines on the same encoders (`method.fusion`)

Each run is a plain `python -m mmer_jax.main` command in `<workdir>/<row>_seed<k>`, so an
interrupted table resumes where it stopped (a run whose results.json exists is not run again).
Writes `<workdir>/table.md` and `table.json`.

The table: per row, the test split's `full` condition (complete data of the modalities the row
uses) in WA, UA and weighted F1, mean ± sample std over seeds, and the mean wall-clock seconds of
a run where results.json records one (`WALL_CLOCK_KEYS`; the column is left out otherwise).
Below it the paper's orderings (`ORDERINGS`) on weighted F1 and WA: the difference better - worse
paired by seed, its mean and sample std, the number of seeds where it holds, the paired t
statistic mean / (std / sqrt(n)) and whether |t| exceeds the two-sided 5% critical value for n - 1
degrees of freedom (`T_CRITICAL`; 4.30 for 3 seeds; null with a single seed or identical
differences). Then the depth rows' best (the paper's is 4) and a summary, "Which of the paper's
orderings hold", per claim (`CLAIMS`).
"""

import importlib.util
import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

from mmer_jax import paired

DEPTHS = (1, 2, 4, 8, 16, 32, 64)
# name -> the row's own --config overrides, in table order.
ROWS = {
    **{m: (f'--config.method.modalities={m}',) for m in ('a', 'v', 't', 'at', 'vt', 'avt')},
    **{f'depth{d}': (f'--config.method.num_layers={d}',) for d in DEPTHS},
    'no_speaker': ('--config.method.speaker_nodes=none',),
    'early_fusion': ('--config.method.fusion=early',),
    'late_fusion': ('--config.method.fusion=late',),
    'gated_attention': ('--config.method.fusion=gated',),
}
METRICS = (('wa', 'WA'), ('ua', 'UA'), ('weighted_f1', 'weighted F1'))
ORDERING_METRICS = ('weighted_f1', 'wa')
CONDITION = 'full'  # the test split's complete data (of the modalities a row uses)
SPLIT = 'test'
# Wall-clock seconds of a run, where results.json has them (the first of these keys it holds).
WALL_CLOCK_KEYS = ('wall_clock_s', 'wall_clock_seconds', 'train_seconds')
# The paper's claims, as (better, worse) pairs of rows, paired by seed.
CLAIMS = (
    ('MMGCN (avt) beats every modality subset', (('avt', 'at'), ('avt', 'vt'), ('avt', 'a'),
                                                  ('avt', 'v'), ('avt', 't'))),
    ('adding audio or visual to text helps', (('at', 't'), ('vt', 't'))),
    ('the speaker embedding helps', (('avt', 'no_speaker'),)),
    ('MMGCN beats the fusion baselines', (('avt', 'early_fusion'), ('avt', 'late_fusion'),
                                          ('avt', 'gated_attention'))),
    ('4 layers beat 64', (('depth4', 'depth64'),)),
)
ORDERINGS = tuple(pair for _, pairs in CLAIMS for pair in pairs)
PAPER_BEST_DEPTH = 4
T_CRITICAL = paired.T_CRITICAL


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
  """The command line (defined only when run as a script, so that tests can import this file
  beside the other launchers, which define flags of the same names)."""
  flags.DEFINE_string('workdir', 'runs/mmgcn_table', 'Where the runs and the table go.',
                      flag_values=flag_values)
  flags.DEFINE_string('config', 'configs/mmgcn_iemocap.py:synthetic', 'The MMGCN config.',
                      flag_values=flag_values)
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (one run per row and seed).',
                    flag_values=flag_values)
  flags.DEFINE_list('rows', list(ROWS), f'Rows to train and tabulate (some of {", ".join(ROWS)}); '
                    'the table keeps the table order.', flag_values=flag_values)
  flags.DEFINE_multi_string('override', [], 'Extra --config.x=v arguments for every run.',
                            flag_values=flag_values)
  flags.DEFINE_list('depth_seeds', None, 'Seeds of the depth rows other than avt\'s depth (a prefix '
                    'of --seeds: deep stacks cost the most; default --seeds). Their orderings pair '
                    'the seeds both rows have.', flag_values=flag_values)
  return flag_values


def avt_depth(config: str, overrides=()) -> int:
  """The number of GCN layers the avt row runs at: the last `--config.method.num_layers=` of
  `overrides`, else the config's (`configs/mmgcn_iemocap.py:synthetic`: 4)."""
  for arg in reversed(list(overrides)):
    if arg.startswith('--config.method.num_layers='):
      return int(arg.split('=', 1)[1])
  path, _, variant = config.partition(':')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if root not in sys.path:  # `from configs import default` inside the config file
    sys.path.insert(0, root)
  if not os.path.exists(path):  # as mmer_jax.main reads it (from the working directory), else
    path = os.path.join(root, path)  # from the repository root
  spec = importlib.util.spec_from_file_location('_mmgcn_table_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return int(module.get_config(variant or None).method.num_layers)


def run_name(row: str, depth: int) -> str:
  """The run a row reads: its own, or avt's for the depth row at avt's depth."""
  return 'avt' if row == f'depth{depth}' else row


def run_dir(root: str, row: str, seed: str, depth: int = 4) -> str:
  return os.path.join(root, f'{run_name(row, depth)}_seed{seed}')


def command(root: str, row: str, seed: str, *, config: str, overrides=(), depth: int = 4) -> list[str]:
  """The `python -m mmer_jax.main` command of one row and seed (avt's for the shared depth row)."""
  name = run_name(row, depth)
  return [sys.executable, '-m', 'mmer_jax.main', f'--config={config}',
          f'--workdir={run_dir(root, row, seed, depth)}', f'--config.seed={seed}', *overrides,
          *ROWS[name]]


def train(root: str, row: str, seed: str, *, config: str, overrides=(), depth: int = 4) -> dict:
  """Runs one row and seed unless its results.json exists; returns that results.json."""
  results = os.path.join(run_dir(root, row, seed, depth), 'results.json')
  if not os.path.exists(results):
    cmd = command(root, row, seed, config=config, overrides=overrides, depth=depth)
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
  with open(results, encoding='utf-8') as f:
    return json.load(f)


def row_scores(results: dict) -> dict[str, float]:
  """{metric: value} of the test split's `full` condition, and `wall_clock_s` where recorded."""
  split = results.get('split', SPLIT)
  if split != SPLIT:
    raise ValueError(f'results.json of the {split!r} split; the table is of the {SPLIT!r} split')
  by_condition = {r['condition']: r['metrics'] for r in results['rows']}
  out = {m: float(by_condition[CONDITION][m]) for m, _ in METRICS}
  wall = next((results[k] for k in WALL_CLOCK_KEYS if results.get(k) is not None), None)
  if wall is not None:
    out['wall_clock_s'] = float(wall)
  return out


def orderings(per_seed: dict[str, list[dict]]) -> list[dict]:
  """The `ORDERINGS` among the tabulated rows: paired-by-seed differences of each metric."""
  out = []
  for better, worse in ORDERINGS:
    if better not in per_seed or worse not in per_seed:
      continue
    for metric in ORDERING_METRICS:
      diff = np.array([b[metric] - w[metric] for b, w in zip(per_seed[better], per_seed[worse])])
      out.append({'better': better, 'worse': worse, 'metric': metric, **paired.paired_difference(diff)})
  return out


def best_depth(mean: dict[str, dict[str, float]]) -> dict:
  """Per ordering metric, the depth row of the highest mean (ties: the shallowest)."""
  rows = [f'depth{d}' for d in DEPTHS if f'depth{d}' in mean]
  if not rows:
    return {}
  out = {}
  for metric in ORDERING_METRICS:
    row = max(rows, key=lambda r: (mean[r][metric], -int(r[5:])))
    out[metric] = {'row': row, 'depth': int(row[5:]), 'mean': mean[row][metric],
                   'paper': bool(int(row[5:]) == PAPER_BEST_DEPTH), 'depth_rows': len(rows)}
  return out


def claims(ordering_rows: list[dict]) -> list[dict]:
  """Per claim and metric: how many of its orderings hold (on the mean) and how many
  significantly (t > t_crit), over those whose rows were tabulated."""
  out = []
  for title, pairs in CLAIMS:
    for metric in ORDERING_METRICS:
      rows = [o for o in ordering_rows if (o['better'], o['worse']) in pairs and o['metric'] == metric]
      if not rows:
        continue
      out.append({'claim': title, 'metric': metric, 'orderings': len(rows), 'of_claim': len(pairs),
                  'held': sum(o['holds'] for o in rows),
                  'significant': sum(bool(o['significant']) and o['holds'] for o in rows),
                  'reversed_significant': sum(bool(o['significant']) and not o['holds'] for o in rows),
                  'holds': all(o['holds'] for o in rows)})
  return out


def make_table(per_seed: dict[str, list[dict]], *, seeds, config: str = '', depth: int = 4,
               root: str = '') -> dict:
  """table.json from each row's per-seed `row_scores`."""
  rows = list(per_seed)
  table = {'config': config, 'seeds': list(seeds), 'rows': rows, 'split': SPLIT,
           'condition': CONDITION, 'avt_depth': depth,
           'overrides': {r: list(ROWS[r]) for r in rows},
           'runs': {r: [run_dir(root, r, s, depth) for s in seeds] for r in rows},
           'per_seed': per_seed, 'mean': {}, 'std': {}, 'wall_clock_s': {}}
  for row, scores in per_seed.items():
    values = {m: np.array([s[m] for s in scores], np.float64) for m, _ in METRICS}
    table['mean'][row] = {m: float(v.mean()) for m, v in values.items()}
    table['std'][row] = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
    if scores and all('wall_clock_s' in s for s in scores):
      table['wall_clock_s'][row] = float(np.mean([s['wall_clock_s'] for s in scores]))
  table['orderings'] = orderings(per_seed)
  table['best_depth'] = best_depth(table['mean'])
  table['claims'] = claims(table['orderings'])
  return table


def build_table(root: str, rows, seeds, *, config: str, overrides=(), depth: int | None = None,
                depth_seeds=None) -> dict:
  """Trains what is missing (resumable) and tabulates `rows` (kept in table order); the depth
  rows other than avt's depth with `depth_seeds` (a prefix of `seeds`) when given."""
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise ValueError(f'unknown rows {unknown}; expected some of {list(ROWS)}')
  if depth_seeds is not None and list(depth_seeds) != list(seeds)[:len(depth_seeds)]:
    raise ValueError(f'depth seeds {list(depth_seeds)} must be a prefix of the seeds {list(seeds)}')
  if depth is None:
    depth = avt_depth(config, overrides)
  rows = [r for r in ROWS if r in rows]

  def row_seeds(row):
    own_depth = row.startswith('depth') and run_name(row, depth) != 'avt'
    return list(depth_seeds) if depth_seeds is not None and own_depth else list(seeds)

  per_seed = {r: [row_scores(train(root, r, s, config=config, overrides=overrides, depth=depth))
                  for s in row_seeds(r)] for r in rows}
  table = make_table(per_seed, seeds=seeds, config=config, depth=depth, root=root)
  table['row_seeds'] = {r: row_seeds(r) for r in rows}
  table['runs'] = {r: [run_dir(root, r, s, depth) for s in row_seeds(r)] for r in rows}
  return table


def _maybe(value: float | None, scale: float = 1.0) -> str:
  return 'n/a' if value is None else f'{scale * value:.2f}'


def _yes_no(value: bool | None) -> str:
  return 'n/a' if value is None else ('yes' if value else 'no')


def _name(metric: str) -> str:
  return dict(METRICS)[metric]


def markdown(table: dict) -> str:
  wall = bool(table.get('wall_clock_s'))
  names = [n for _, n in METRICS] + (['wall-clock (s)'] if wall else [])
  lines = [f'**MMGCN rows** ({table["split"]} split, condition `{table["condition"]}`: complete data '
           f'of the modalities a row uses; mean ± sample std over seeds {", ".join(table["seeds"])})',
           '', '| row | overrides | ' + ' | '.join(names) + ' |', '|---|---|' + '---|' * len(names)]
  for row in table['rows']:
    cells = [f"{table['mean'][row][m]:.4f} ± {table['std'][row][m]:.4f}" for m, _ in METRICS]
    if wall:
      w = table['wall_clock_s'].get(row)
      cells.append('n/a' if w is None else f'{w:.1f}')
    over = ' '.join(f'`{o.removeprefix("--config.method.")}`' for o in table['overrides'][row])
    if run_name(row, table['avt_depth']) != row:
      over += ' (avt\'s runs)'
    own_seeds = table.get('row_seeds', {}).get(row, table['seeds'])
    if list(own_seeds) != list(table['seeds']):
      over += f" (seeds {', '.join(own_seeds)})"

    lines.append(f'| {row} | {over} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  if table.get('orderings'):
    lines += ['**Orderings** (difference better - worse, paired by seed, in points; significant: '
              '|t| > t_crit, two-sided 5%)', '',
              '| ordering | metric | mean ± sample std | seeds held | t | t_crit | significant | holds |',
              '|---|---|---|---|---|---|---|---|']
    for o in table['orderings']:
      crit = 'n/a' if o['t_critical'] is None else f"{o['t_critical']:.2f}"
      lines.append(f"| {o['better']} > {o['worse']} | {_name(o['metric'])} | "
                   f"{100 * o['mean_diff']:+.2f} ± {_maybe(o['std_diff'], 100)} | "
                   f"{o['seeds_held']}/{o['num_seeds']} | {_maybe(o['t'])} | {crit} | "
                   f"{_yes_no(o['significant'])} | {_yes_no(o['holds'])} |")
    lines.append('')
  if table.get('best_depth'):
    lines.append('**Depth** (the paper\'s best: 4 layers): ' + '; '.join(
        f"best by {_name(m)}: {b['row']} ({b['mean']:.4f})" for m, b in table['best_depth'].items()))
    lines.append('')
  if table.get('claims') or table.get('best_depth'):
    lines += ["## Which of the paper's orderings hold", '']
    for c in table.get('claims', []):
      verdict = 'holds' if c['holds'] else 'does not hold'
      extra = (f", {c['reversed_significant']} significantly reversed" if c['reversed_significant']
               else '')
      if c['orderings'] < c['of_claim']:
        extra += f" (only {c['orderings']} of its {c['of_claim']} orderings tabulated)"
      lines.append(f"- {c['claim']} ({_name(c['metric'])}): {verdict}; {c['held']}/{c['orderings']} "
                   f"orderings hold on the mean, {c['significant']}/{c['orderings']} significantly{extra}")
    for m, b in (table.get('best_depth') or {}).items():
      few = (f", only {b['depth_rows']} of the {len(DEPTHS)} depth rows tabulated"
             if b['depth_rows'] < len(DEPTHS) else '')
      lines.append(f"- the best depth is {PAPER_BEST_DEPTH} layers ({_name(m)}): "
                   f"{'holds' if b['paper'] else 'does not hold'} (best: {b['row']}{few})")
    lines.append('')
  return '\n'.join(lines)


def write(root: str, table: dict) -> str:
  text = markdown(table)
  with open(os.path.join(root, 'table.json'), 'w', encoding='utf-8') as f:
    json.dump(table, f, indent=2)
  with open(os.path.join(root, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(text)
  return text


def main(argv, flag_values: flags.FlagValues = flags.FLAGS):
  del argv
  v = flag_values
  unknown = [r for r in v.rows if r not in ROWS]
  if unknown:
    raise app.UsageError(f'--rows: unknown {unknown}; expected some of {", ".join(ROWS)}')
  os.makedirs(v.workdir, exist_ok=True)
  table = build_table(v.workdir, v.rows, v.seeds, config=v.config, overrides=v.override,
                      depth_seeds=v.depth_seeds)
  print(write(v.workdir, table))


if __name__ == '__main__':
  define_flags()
  app.run(main)
