"""IMDer against zero-filled recovery over missing rates (docs/imder.md#results-on-syntheticmosi).

Rows, paired by seed: `imder` (both stages), `zeros_complete` (its stage 1: the head trained on
complete data, missing projections zero-filled at test), `zeros_missing` (`recovery=zeros` from
the same stage 1), `imder_fast` (`:fast` from the same stage 1). Analysis: `:fast` against
Euler-Maruyama 100 at rate 0.5 per seed (`fast`), and with `:cpu,nfe=K` every sampler's metrics
against its NFE on seed K's imder checkpoint (`nfe`), both also in table.md. `:authors`: the
config without `cpu`.
"""

import functools
import json
import os

from mmer_jax import compare
from mmer_jax import reevaluate
from mmer_jax import tables

RATES = ('0.0', '0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7')
METRICS = ('mae', 'acc2', 'f1', 'acc7', 'corr')
CONFIG = 'configs/imder_mosi.py:synthetic'
EM100 = {'method.sampler': 'euler_maruyama', 'method.num_steps': 100, 'method.sampler_options': {}}
NFES = (5, 10, 20, 50, 100)
# sampler -> (method.sampler, options, score evaluations per step)
SAMPLER_GRID = {'euler_maruyama': ('euler_maruyama', {}, 1), 'pc': ('pc', {'corrector_steps': 1}, 2),
                'ode_heun': ('ode_heun', {}, 2), 'ode_rk4': ('ode_rk4', {}, 4),
                'dpm_solver_1': ('dpm_solver', {'order': 1}, 1),
                'dpm_solver_2': ('dpm_solver', {'order': 2}, 2)}


def fast_cost(workdir, spec, table) -> dict:
  """Per seed: `fast` (imder_fast's own rate-0.5 row), `em100` (imder's checkpoint with EM-100),
  `fast_em100` (imder_fast's with EM-100); paired differences fast - em100 (each seed's cell is
  kept in `imder_fast/seed=<k>/fast_cost.json`, so the EM-100 evaluations run once)."""
  per_seed = []
  for seed in table['rows']['imder_fast']['seeds']:
    done = os.path.join(tables.run_dir(workdir, spec, 'imder_fast', seed), 'fast_cost.json')
    if not os.path.exists(done):
      cell = {'seed': seed, 'fast': {m: table['rows']['imder_fast']['cells']['rate=0.5'][m][
          'values'][table['rows']['imder_fast']['seeds'].index(seed)] for m in METRICS}}
      for name, row in (('em100', 'imder'), ('fast_em100', 'imder_fast')):
        metrics = reevaluate.Restored(tables.run_dir(workdir, spec, row, seed)).metrics_at(0.5, EM100)
        cell[name] = {m: metrics[m] for m in METRICS}
      with open(done, 'w', encoding='utf-8') as f:
        json.dump(cell, f, indent=1)
    with open(done, encoding='utf-8') as f:
      per_seed.append(json.load(f))
  def mean_std(values):  # the table's statistics: mean, sample std (None for one seed)
    s = compare.summarize(values)
    return [s['mean'], s['std']]
  return {'rate': 0.5, 'per_seed': per_seed,
          'summary': {n: {m: mean_std([c[n][m] for c in per_seed]) for m in METRICS}
                      for n in ('fast', 'em100', 'fast_em100')},
          'paired': {f'fast - {n}': {m: mean_std([c['fast'][m] - c[n][m] for c in per_seed])
                                     for m in METRICS} for n in ('em100', 'fast_em100')}}


def nfe_curve(workdir, spec, seed: int, fast_max: int = 100) -> dict:
  """Every sampler at each NFE of `NFES` it can make, at rate 0.5, from seed's imder checkpoint
  (samplers other than Euler-Maruyama up to `fast_max` NFE)."""
  restored = reevaluate.Restored(tables.run_dir(workdir, spec, 'imder', seed))
  points = []
  for name, (sampler, options, per_step) in SAMPLER_GRID.items():
    for nfe in NFES:
      steps = nfe // per_step
      if nfe % per_step or steps < (2 if name == 'euler_maruyama' else 1):
        continue
      if name != 'euler_maruyama' and nfe > fast_max:
        continue
      metrics = restored.metrics_at(0.5, {'method.sampler': sampler, 'method.num_steps': steps,
                                          'method.sampler_options': options})
      points.append({'sampler': name, 'nfe': nfe, 'num_steps': steps,
                     **{m: metrics[m] for m in METRICS}})
  return {'seed': seed, 'rate': 0.5, 'points': points}


def analysis(workdir, spec, table, nfe_seed=None) -> dict:
  out = {}
  if table['rows'].get('imder_fast', {}).get('seeds'):
    out['fast'] = fast_cost(workdir, spec, table)
  if nfe_seed is not None:
    out['nfe'] = nfe_curve(workdir, spec, nfe_seed)
  return out


def _mean_std(value: list) -> str:
  mean, std = value
  return f'{mean:.4f}' + ('' if std is None else f' ± {std:.4f}')


def analysis_markdown(analysis: dict) -> str:
  """table.md's text of the analysis: `fast` (fast, em100, fast_em100 and the paired
  differences, mean ± sample std per metric) and `nfe` (sampler x NFE, MAE / Acc-2)."""
  lines = []
  fast = analysis.get('fast')
  if fast:
    lines += [f"**`:fast` against Euler-Maruyama 100** (rate {fast['rate']}, "
              f"{len(fast['per_seed'])} seeds; mean ± sample std, differences paired by seed)", '',
              '| | ' + ' | '.join(METRICS) + ' |', '|---|' + '---|' * len(METRICS)]
    for name, by_metric in (*fast['summary'].items(), *fast['paired'].items()):
      lines.append(f'| {name} | ' + ' | '.join(_mean_std(by_metric[m]) for m in METRICS) + ' |')
    lines.append('')
  nfe = analysis.get('nfe')
  if nfe:
    at = {(p['sampler'], p['nfe']): p for p in nfe['points']}
    lines += [f"**NFE** (seed {nfe['seed']}'s imder checkpoint, rate {nfe['rate']}; MAE / Acc-2)",
              '', '| sampler | ' + ' | '.join(map(str, NFES)) + ' |', '|---|' + '---|' * len(NFES)]
    for name in dict.fromkeys(p['sampler'] for p in nfe['points']):
      lines.append(f'| {name} | ' + ' | '.join(
          f"{at[name, k]['mae']:.3f} / {at[name, k]['acc2']:.3f}" if (name, k) in at else '—'
          for k in NFES) + ' |')
    lines.append('')
  return '\n'.join(lines)


def spec(arg: str = 'cpu') -> tables.Spec:
  options = dict(a.partition('=')[::2] for a in arg.split(',') if a)
  scale = 'authors' if 'authors' in options else 'cpu'
  config = CONFIG + (',cpu' if scale == 'cpu' else '')
  nfe_seed = int(options['nfe']) if options.get('nfe') else None
  return tables.Spec(
      name=f'IMDer on synthetic/mosi ({scale} scale)', config=config,
      overrides=(f'--config.eval.rates=({", ".join(RATES)})', "--config.eval.conditions=('full',)"),
      rows={'imder': tables.Row(),
            'zeros_complete': tables.Row(results_of=('imder', 'stage1')),
            'zeros_missing': tables.Row(overrides=('--config.method.recovery=zeros',),
                                        link={'stage1': 'imder'}),
            'imder_fast': tables.Row(config=config + ',fast', link={'stage1': 'imder'})},
      conditions=tuple(f'rate={r}' for r in RATES), metrics=METRICS,
      orderings=tuple(tables.Ordering('imder', worse, m, f'rate={r}', f'IMDer beats {worse}')
                      for worse in ('zeros_complete', 'zeros_missing') for r in RATES[1:]
                      for m in METRICS),
      lower_is_better=('mae',), analysis=functools.partial(analysis, nfe_seed=nfe_seed),
      analysis_markdown=analysis_markdown)
