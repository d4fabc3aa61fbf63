"""M3ER's ablation, clean and with noise-replaced modalities (docs/m3er.md): `spec(dataset)`.

Two networks trained per seed: `original_mult` (Liu et al.'s multiplicative loss; no check, no
proxy) and `m3er` (M3ER's loss, the config's modality check and proxies). The check and the
proxies act at inference only, so the other rows (`REEVALUATED`) run one of the two networks
again (`--mode=evaluate` in a run whose `checkpoints` and `feature_stats.json`, the
standardisation it was trained with, link to the trained run's): their differences are the
parts', not the seeds'. Weighted F1, WA and the paper's mean one-vs-rest accuracy (MA) on
complete test data and the `noise=<f>` rows; the paper's orderings paired by seed, on every
condition, in weighted F1 and MA. Datasets: `DATASETS` (ravdess_av reads
`../shared/data/ravdess_av`; `--override=--config.data.features_dir=DIR` for another place).
`spec('DATASET,trained_in=DIR')` trains nothing: every row re-evaluates the networks of the
table in DIR (e.g. with `--override=--config.eval.noise_replace=True`).
"""

from mmer_jax import tables

CONFIG = 'configs/m3er_iemocap.py'
DATASETS = {  # spec arg -> (config, overrides)
    'iemocap_4': (CONFIG + ':synthetic', ()),
    'mosei_emotions': ('configs/m3er_mosei.py:synthetic', ()),
    # 240 training clips: batches of 32 (the paper's 256 is one step per epoch), patience 20.
    'ravdess_av': (CONFIG, ('--config.data.name=features_dir', '--config.data.standardize=True',
                            '--config.data.features_dir=../shared/data/ravdess_av',
                            '--config.data.batch_size=32', '--config.train.patience=20')),
}
TRAINED = ('original_mult', 'm3er')
REEVALUATED = {  # row -> (its variant, the trained row whose network it runs, own overrides)
    'no_proxy': ('no_proxy', 'm3er', ()),
    'no_check_no_proxy': ('no_check_no_proxy', 'm3er', ()),
    'm3er_paper_check': ('m3er', 'm3er', ('--config.method.check_statistic=correlation',)),
    'no_proxy_paper_check': ('no_proxy', 'm3er', ('--config.method.check_statistic=correlation',)),
    # The parts on the network trained with the original loss (which trains better here).
    'original_mult_check': ('original_mult', 'original_mult',
                            ('--config.method.modality_check=True',)),
    'original_mult_check_proxy': ('original_mult', 'original_mult', (
        '--config.method.modality_check=True', '--config.method.proxy=True')),
}
LINKED = ('checkpoints', 'feature_stats.json')
CONDITIONS = ('full', 'noise=0.3', 'noise=0.5', 'noise=1.0')
ORDERINGS = (('m3er', 'no_proxy'), ('no_proxy', 'no_check_no_proxy'),
             ('m3er', 'no_check_no_proxy'), ('no_check_no_proxy', 'original_mult'),
             ('original_mult_check_proxy', 'original_mult_check'),
             ('original_mult_check', 'original_mult'))


def spec(arg: str = 'iemocap_4') -> tables.Spec:
  dataset, _, trained_in = arg.partition(',trained_in=')
  if dataset not in DATASETS:
    raise ValueError(f'm3er table: dataset {dataset!r}; expected one of {list(DATASETS)}')
  config, data = DATASETS[dataset]
  runs = {r: (r, r, ()) for r in TRAINED} | REEVALUATED  # row -> (variant, network, overrides)
  rows = {r: tables.Row(overrides=(f'--config.method.variant={variant}', *own))
          if r in TRAINED and not trained_in else
          tables.Row(overrides=(f'--config.method.variant={variant}', *own),
                     link={name: trained for name in LINKED}, link_root=trained_in or None,
                     mode='evaluate')
          for r, (variant, trained, own) in runs.items()}
  return tables.Spec(
      name=f'M3ER ablation on {dataset}' + (f' (networks of {trained_in})' if trained_in else ''),
      config=config, overrides=data, rows=rows,
      conditions=CONDITIONS, metrics=('weighted_f1', 'wa', 'mean_ovr_accuracy'),
      orderings=tuple(tables.Ordering(b, w, m, c) for b, w in ORDERINGS for c in CONDITIONS
                      for m in ('weighted_f1', 'mean_ovr_accuracy')))
