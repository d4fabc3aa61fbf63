"""Bring-your-own-features rows on one feature directory (docs/byof.md): `spec('DIR')`.

Late and early fusion (configs/fusion_features.py) trained on complete data and with random
missing patterns (`train.missing=patterns_and_full`), late fusion trained with the per-modality
rates `UNEVEN`, and MMIN (configs/mmin_iemocap.py as it is, both stages). `spec('DIR,imder')`
adds IMDer's `cpu` variant (`imder`) and its stage 1 zero-filled (`imder_zeros_complete`, read
from the imder run). Every row is evaluated on the same grid: the conditions the directory can
express, `UNEVEN` (e.g. faces lost more often than voices) and the uniform rates `RATES`. WA
and UA, mean ± sample std over seeds; the analysis: the samples each condition scored.
"""

from mmer_jax import missing
from mmer_jax import tables

FUSION = 'configs/fusion_features.py'
UNEVEN = 'a:0.1,v:0.5'
RATES = (0.0, 0.3, 0.5, 0.7)
GRID = ('full', 'a', 'v', 't', 'av', 'at', 'vt', f'rate={UNEVEN}')
ROWS = {  # name -> (config, overrides)
    'late_fusion': (FUSION, ('--config.method.name=late_fusion',)),
    'early_fusion': (FUSION, ('--config.method.name=early_fusion',)),
    'late_fusion_augmented': (FUSION, ('--config.method.name=late_fusion',
                                       '--config.train.missing=patterns_and_full')),
    'early_fusion_augmented': (FUSION, ('--config.method.name=early_fusion',
                                        '--config.train.missing=patterns_and_full')),
    'late_fusion_uneven': (FUSION, ('--config.method.name=late_fusion',
                                    '--config.train.missing=rate',
                                    f'--config.train.missing_rates={UNEVEN}')),
    'mmin': ('configs/mmin_iemocap.py', ()),
}
# IMDer's `cpu` variant (configs/imder_mosi.py `cpu_scale`, as launch/tables/imder_mosi.py runs
# it: two-level score U-Nets, two RCABs, DPM-Solver draws), classification with the MulT head;
# selection pooled over the one-modality conditions (on audio + visual features: each modality
# recovered once).
IMDER = ('configs/imder_mosi.py:cpu', ("--config.train.valid_conditions=('a', 'v')",))


def scored_samples(workdir: str, spec: tables.Spec, table: dict) -> dict:
  """{row: {condition: samples scored}} of each row's first seed (the same for every seed)."""
  out = {}
  for row, entry in table['rows'].items():
    if entry['seeds']:
      (results,) = tables.load_row(workdir, spec, row, entry['seeds'][:1]).values()
      out[row] = {r['condition']: r.get('num_samples') for r in results['rows']}
  return out


def spec(arg: str | None = None) -> tables.Spec:
  if not arg:
    raise ValueError('the features table needs its directory: '
                     '--spec=launch/tables/features.py:DIR (or DIR,imder)')
  features_dir, with_imder = arg.removesuffix(',imder'), arg.endswith(',imder')
  rows = {name: tables.Row(config=config, overrides=overrides)
          for name, (config, overrides) in ROWS.items()}
  if with_imder:
    rows['imder'] = tables.Row(config=IMDER[0], overrides=IMDER[1])
    rows['imder_zeros_complete'] = tables.Row(results_of=('imder', 'stage1'))
  uneven = 'rate=' + missing.rates_name(missing.parse_rates(UNEVEN))  # as results.json names it
  return tables.Spec(
      name=f'Features table on {features_dir}', config=FUSION, rows=rows,
      overrides=(f'--config.data.features_dir={features_dir}',
                 f'--config.eval.conditions={GRID!r}', f'--config.eval.rates={RATES!r}'),
      conditions=(*GRID[:-1], uneven, *(f'rate={missing.probability_text(r)}' for r in RATES)),
      metrics=('wa', 'ua'), analysis=scored_samples)
