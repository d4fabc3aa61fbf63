"""IMDer against the zero-filled rows over missing rates and seeds; the sampler's NFE curve.

  python launch/imder_table.py --workdir=runs/imder_table                     # synthetic/mosi
  python launch/imder_table.py --workdir=runs/imder_table --seeds=0,1,2,3,4 --scale=authors
  python launch/imder_table.py --workdir=runs/imder_table --nfe_seed=0        # + the NFE curve

Rows, all the same projections and fusion head (`configs/imder_mosi.py`), paired by seed:

  imder           both stages: complete-data pretraining, then recovery trained at rate 0.5
  zeros_complete  that run's stage 1: the head trained on complete data, a missing modality's
                  projection zero-filled at test (the deployment case the paper motivates)
  zeros_missing   `method.recovery=zeros` from the same stage 1 (linked, not retrained): the head
                  trained at rate 0.5 with the missing projections zero-filled

Each run is a plain `python -m mmer_jax.main` command in `<workdir>/<row>/seed_<k>`, so an
interrupted table resumes. `--scale=cpu` (default) runs the config's `cpu` variant,
`configs/imder_mosi.py:synthetic,cpu`: the model and schedule that fit a 2-core CPU
(`imder_mosi.cpu_scale`; docs/imder.md says what it changes); `--scale=authors` runs
`configs/imder_mosi.py:synthetic` as it is.
Writes `table.md` / `table.json`: per row and rate the mean ± sample std over seeds of MAE,
Acc-2 (non-zero), F1, Acc-7 and Corr, and the paired differences imder - zeros_* per seed.

`--fast` adds the accuracy cost of `:fast` (issue 27): per seed an `imder_fast` run (stage 2
only, from the `imder` run's stage 1, trained and evaluated with `configs/imder_mosi.py:...,fast`),
and both checkpoints re-evaluated at rate 0.5 with Euler-Maruyama, 100 steps (the authors'
sampler); writes `fast.json` / `fast.md`: per seed and mean ± std, with paired differences.

`--nfe_seed=K` re-evaluates that seed's IMDer checkpoint at rate 0.5 with every sampler at NFE
5, 10, 20, 50 and 100 (where the sampler's steps make that NFE), writing `nfe.json`, `nfe.md`
and `nfe.png`.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

CONFIG = 'configs/imder_mosi.py'
# --scale -> the config's variants: `cpu` is the config's laptop size (configs/imder_mosi.py
# `cpu_scale`), `authors` the config as it is.
SCALES = {'cpu': 'synthetic,cpu', 'authors': 'synthetic'}
ROWS = ('imder', 'zeros_complete', 'zeros_missing')
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
METRICS = ('mae', 'acc2', 'f1', 'acc7', 'corr')
NFES = (5, 10, 20, 50, 100)
# sampler -> (options, score evaluations per step)
SAMPLER_GRID = {'euler_maruyama': ({}, 1), 'pc': ({'corrector_steps': 1}, 2),
                'ode_heun': ({}, 2), 'ode_rk4': ({}, 4), 'dpm_solver_1': ({'order': 1}, 1),
                'dpm_solver_2': ({'order': 2}, 2)}


def define_flags():
  return {
      'workdir': flags.DEFINE_string('workdir', 'runs/imder_table', 'Where runs and tables go.'),
      'seeds': flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (one run per row and seed).'),
      'scale': flags.DEFINE_enum('scale', 'cpu', list(SCALES), 'Model and schedule: cpu runs '
                                 'the config\'s cpu variant, authors the config as it is.'),
      'override': flags.DEFINE_multi_string('override', [], 'Extra --config.x=v for every run.'),
      'nfe_seed': flags.DEFINE_string('nfe_seed', None, 'Also the NFE curve of this seed.'),
      'nfe_fast_max': flags.DEFINE_integer('nfe_fast_max', 100, 'Largest NFE for the samplers '
                                           'other than Euler-Maruyama.'),
      'nfe_only': flags.DEFINE_bool('nfe_only', False, 'Only the NFE curve (the runs exist).'),
      'fast': flags.DEFINE_bool('fast', False, 'Also the accuracy cost of :fast against EM-100.'),
  }


def run_dir(root: str, row: str, seed: str) -> str:
  return os.path.join(root, row, f'seed_{seed}')


def config_arg(scale: str, fast: bool = False) -> str:
  """The `--config=` value of a run at `scale` ('cpu' | 'authors'), `fast`: with `:fast`."""
  return f'{CONFIG}:{SCALES[scale]}' + (',fast' if fast else '')


def train(root: str, row: str, seed: str, *, overrides=(), scale: str = 'cpu') -> dict:
  """Runs (or resumes, or skips when finished) one row and seed; returns its results.json."""
  if row == 'zeros_complete':
    path = os.path.join(run_dir(root, 'imder', seed), 'stage1', 'results.json')
  else:
    workdir = run_dir(root, row, seed)
    path = os.path.join(workdir, 'results.json')
    if not os.path.exists(path):
      extra = []
      if row in ('zeros_missing', 'imder_fast'):  # the imder run's stage 1, not a retrained one
        os.makedirs(workdir, exist_ok=True)
        link = os.path.join(workdir, 'stage1')
        if not os.path.exists(link):
          os.symlink(os.path.abspath(os.path.join(run_dir(root, 'imder', seed), 'stage1')), link)
        extra = ['--config.method.recovery=zeros'] if row == 'zeros_missing' else []
      command = [sys.executable, '-m', 'mmer_jax.main',
                 f'--config={config_arg(scale, fast=row == "imder_fast")}',
                 f'--config.seed={seed}', f'--config.eval.rates={RATES!r}',
                 "--config.eval.conditions=('full',)", f'--workdir={workdir}', *extra,
                 *overrides]
      print(' '.join(command), flush=True)
      subprocess.run(command, check=True)
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def rate_scores(results: dict) -> dict[str, dict[str, float]]:
  """{rate: {metric: value}} of one run's grid rows."""
  out = {}
  for row in results['rows']:
    if row['condition'].startswith('rate='):
      rate = f"{float(row['condition'].split('=')[1]):.1f}"
      out[rate] = {m: float(row['metrics'][m]) for m in METRICS}
  return out


def _mean_std(values) -> list[float]:
  values = np.asarray(values, np.float64)
  return [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]


def aggregate(per_seed: dict[str, list[dict]]) -> dict:
  """{'rows': {row: {rate: {metric: [mean, std]}}}, 'paired': {imder - row: {rate: {metric:
  {'mean_std': [..], 'better': seeds where imder is better}}}}}."""
  scores = {row: [rate_scores(r) for r in runs] for row, runs in per_seed.items()}
  rates = sorted(scores['imder'][0])
  table = {row: {rate: {m: _mean_std([s[rate][m] for s in runs]) for m in METRICS}
                 for rate in rates} for row, runs in scores.items()}
  paired = {}
  for row in scores:
    if row == 'imder':
      continue
    paired[f'imder - {row}'] = {}
    for rate in rates:
      cell = {}
      for m in METRICS:
        diff = [a[rate][m] - b[rate][m] for a, b in zip(scores['imder'], scores[row])]
        better = sum((d < 0) if m == 'mae' else (d > 0) for d in diff)
        cell[m] = {'mean_std': _mean_std(diff), 'better': int(better), 'seeds': len(diff)}
      paired[f'imder - {row}'][rate] = cell
  return {'rows': table, 'paired': paired}


def markdown(agg: dict, seeds) -> str:
  rates = list(next(iter(agg['rows'].values())))
  lines = [f'Test metrics on synthetic/mosi by missing rate, mean ± std over seeds '
           f'{",".join(seeds)}.', '']
  for m in METRICS:
    lines += [f'**{m}**', '', '| row | ' + ' | '.join(rates) + ' |', '|---|' + '---|' * len(rates)]
    for row, cells in agg['rows'].items():
      lines.append(f'| {row} | ' + ' | '.join(
          f'{cells[r][m][0]:.3f} ± {cells[r][m][1]:.3f}' for r in rates) + ' |')
    for name, cells in agg['paired'].items():
      lines.append(f'| {name} (paired; seeds better) | ' + ' | '.join(
          f'{cells[r][m]["mean_std"][0]:+.3f} ± {cells[r][m]["mean_std"][1]:.3f} '
          f'({cells[r][m]["better"]}/{cells[r][m]["seeds"]})' for r in rates) + ' |')
    lines.append('')
  return '\n'.join(lines)


def _restored_run(root: str, row: str, seed: str, overrides=(), scale: str = 'cpu'):
  """(config, workdir, best params) of one row's stage-2 checkpoint, with the config the row
  was trained with (`scale`, `overrides`, `:fast` for `imder_fast`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmer_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from mmer_jax import stages  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.getcwd())
  from configs import imder_mosi  # pylint: disable=g-import-not-at-top
  config = imder_mosi.get_config(SCALES[scale] + (',fast' if row == 'imder_fast' else ''))
  config.seed = int(seed)
  apply_overrides(config, overrides)
  config = stages.main_stage(config)
  workdir = os.path.join(run_dir(root, row, seed), 'imder')
  _, best = checkpoint.create_managers(workdir)
  shapes = checkpoint.saved_params_shapes(best)
  target = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  return config, workdir, checkpoint.restore(best, {'params': target})[0]['params']


def evaluate_at(config, workdir, params, sampler: str, steps: int, options=None,
                rate: float = 0.5) -> dict[str, float]:
  """Test metrics at missing `rate` of restored `params` with one sampler of `steps` steps."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmer_jax import evaluate  # pylint: disable=g-import-not-at-top
  from mmer_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  with config.unlocked():
    config.method.sampler = 'dpm_solver' if sampler.startswith('dpm') else sampler
    config.method.num_steps = steps
    config.method.sampler_options = dict(options or {})
  run = train_lib.Run(config, devices=jax.devices()[:1], workdir=workdir)
  rows = evaluate.run_grid(run.spec, run.predict, run.device_params(params),
                           run.eval_batches(config.eval.split), conditions=(),
                           rates=(rate,), seed=config.seed, group_patterns=run.group_patterns)
  return {m: float(rows[0]['metrics'][m]) for m in METRICS}


def nfe_curve(root: str, seed: str, overrides=(), fast_max: int = 100, scale: str = 'cpu') -> dict:
  """Every sampler at each NFE of `NFES` it can make, at rate 0.5, from one IMDer checkpoint.

  `scale` and `overrides` are the ones the run was trained with (the table's), so the model is
  the same; samplers other than Euler-Maruyama stop at `fast_max` NFE (`--nfe_fast_max`, to save
  time)."""
  config, workdir, params = _restored_run(root, 'imder', seed, overrides, scale)
  out = []
  for sampler, (options, per_step) in SAMPLER_GRID.items():
    for nfe in NFES:
      steps = nfe // per_step
      if nfe % per_step or steps < (2 if sampler == 'euler_maruyama' else 1):
        continue
      if sampler != 'euler_maruyama' and nfe > fast_max:  # the fast samplers' range
        continue
      metrics = evaluate_at(config, workdir, params, sampler, steps, options)
      out.append({'sampler': sampler, 'nfe': nfe, 'num_steps': steps, **metrics})
      print(json.dumps(out[-1]), flush=True)
  return {'seed': seed, 'rate': 0.5, 'split': config.eval.split, 'points': out}


def fast_cost(root: str, seeds, overrides=(), scale: str = 'cpu') -> dict:
  """`:fast` against EM-100 at rate 0.5, per seed: `fast` (imder_fast as trained, its own
  sampler), `em100` (the imder row's checkpoint, EM-100), `fast_em100` (imder_fast's checkpoint,
  EM-100: the training draws' share of the difference); paired differences fast - em100."""
  per_seed = []
  for seed in seeds:
    done = os.path.join(run_dir(root, 'imder_fast', seed), 'fast_cost.json')  # a seed's cell
    if os.path.exists(done):
      with open(done, encoding='utf-8') as f:
        per_seed.append(json.load(f))
      continue
    # The run's own test grid at rate 0.5 is `:fast` as trained (evaluation is deterministic).
    cell = {'seed': seed, 'fast': rate_scores(
        train(root, 'imder_fast', seed, overrides=overrides, scale=scale))['0.5']}
    for name, row in (('em100', 'imder'), ('fast_em100', 'imder_fast')):
      config, workdir, params = _restored_run(root, row, seed, overrides, scale)
      cell[name] = evaluate_at(config, workdir, params, 'euler_maruyama', 100)
      print(json.dumps({'seed': seed, name: cell[name]}), flush=True)
    with open(done, 'w', encoding='utf-8') as f:
      json.dump(cell, f, indent=1)
    per_seed.append(cell)
  summary = {name: {m: _mean_std([c[name][m] for c in per_seed]) for m in METRICS}
             for name in ('fast', 'em100', 'fast_em100')}
  paired = {}
  for name in ('em100', 'fast_em100'):
    paired[f'fast - {name}'] = {m: _mean_std([c['fast'][m] - c[name][m] for c in per_seed])
                                for m in METRICS}
  return {'rate': 0.5, 'seeds': list(seeds), 'per_seed': per_seed, 'summary': summary,
          'paired': paired}


def fast_markdown(cost: dict) -> str:
  lines = [f'`:fast` against EM-100, test split at rate {cost["rate"]}, seeds '
           f'{",".join(cost["seeds"])} (mean ± sample std).', '',
           '| | ' + ' | '.join(METRICS) + ' |', '|---|' + '---|' * len(METRICS)]
  for name, cells in {**cost['summary'], **cost['paired']}.items():
    lines.append(f'| {name} | ' + ' | '.join(f'{cells[m][0]:+.3f} ± {cells[m][1]:.3f}'
                                            if name.startswith('fast -') else
                                            f'{cells[m][0]:.3f} ± {cells[m][1]:.3f}'
                                            for m in METRICS) + ' |')
  return '\n'.join(lines) + '\n'


def apply_overrides(config, overrides) -> None:
  """Sets `--config.a.b=value` strings on `config` (values parsed as Python literals)."""
  for item in overrides:
    path, _, text = item.removeprefix('--config.').partition('=')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = path.split('.')
    node = config
    for key in parents:
      node = node[key]
    node[leaf] = value


def nfe_markdown(curve: dict) -> str:
  samplers = list(dict.fromkeys(p['sampler'] for p in curve['points']))
  lines = [f'Seed {curve["seed"]}, test at missing rate {curve["rate"]}: MAE / Acc-2 by NFE.', '',
           '| sampler | ' + ' | '.join(str(n) for n in NFES) + ' |', '|---|' + '---|' * len(NFES)]
  for s in samplers:
    cells = {p['nfe']: p for p in curve['points'] if p['sampler'] == s}
    lines.append(f'| {s} | ' + ' | '.join(
        f'{cells[n]["mae"]:.3f} / {cells[n]["acc2"]:.3f}' if n in cells else '—' for n in NFES)
                 + ' |')
  return '\n'.join(lines) + '\n'


def nfe_plot(curve: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for s in dict.fromkeys(p['sampler'] for p in curve['points']):
    pts = sorted((p['nfe'], p['mae'], p['acc2']) for p in curve['points'] if p['sampler'] == s)
    nfe, mae, acc = zip(*pts)
    axes[0].plot(nfe, mae, marker='o', label=s)
    axes[1].plot(nfe, acc, marker='o', label=s)
  for ax, name in zip(axes, ('MAE', 'Acc-2')):
    ax.set_xscale('log')
    ax.set_xlabel('score evaluations (NFE)')
    ax.set_ylabel(name)
  axes[1].legend(fontsize=7)
  fig.suptitle(f'IMDer sampler vs NFE (synthetic/mosi, rate {curve["rate"]}, seed {curve["seed"]})')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv, flag_values):
  del argv
  v = {name: flag.value for name, flag in flag_values.items()}
  root = v['workdir']
  scale, overrides = v['scale'], list(v['override'])
  if v['nfe_only']:
    return write_nfe(root, v['nfe_seed'], overrides, v['nfe_fast_max'], scale)
  per_seed = {row: [] for row in ROWS}
  for seed in v['seeds']:  # seed by seed, so a partial table is already paired
    for row in ('imder', 'zeros_missing', 'zeros_complete'):
      per_seed[row].append(train(root, row, seed, overrides=overrides, scale=scale))
  agg = aggregate(per_seed)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'table.json'), 'w', encoding='utf-8') as f:
    json.dump({'seeds': v['seeds'], 'scale': scale, 'config': config_arg(scale),
               'overrides': overrides, **agg}, f, indent=1)
  text = markdown(agg, v['seeds'])
  with open(os.path.join(root, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(text)
  print(text)
  if v['fast']:
    cost = fast_cost(root, v['seeds'], overrides, scale)
    with open(os.path.join(root, 'fast.json'), 'w', encoding='utf-8') as f:
      json.dump(cost, f, indent=1)
    with open(os.path.join(root, 'fast.md'), 'w', encoding='utf-8') as f:
      f.write(fast_markdown(cost))
    print(fast_markdown(cost))
  if v['nfe_seed'] is not None:
    write_nfe(root, v['nfe_seed'], overrides, v['nfe_fast_max'], scale)


def write_nfe(root: str, seed: str, overrides, fast_max: int, scale: str = 'cpu') -> None:
  curve = nfe_curve(root, seed, overrides, fast_max, scale)
  with open(os.path.join(root, 'nfe.json'), 'w', encoding='utf-8') as f:
    json.dump(curve, f, indent=1)
  with open(os.path.join(root, 'nfe.md'), 'w', encoding='utf-8') as f:
    f.write(nfe_markdown(curve))
  nfe_plot(curve, os.path.join(root, 'nfe.png'))
  print(nfe_markdown(curve))


if __name__ == '__main__':
  _FLAGS = define_flags()
  app.run(lambda argv: main(argv, _FLAGS))
