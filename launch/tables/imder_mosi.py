"""IMDer against zero-filled recovery over missing rates (docs/imder.md#results-on-syntheticmosi).

Rows, paired by seed: `imder` (both stages), `zeros_complete` (its stage 1: the head trained on
complete data, missing projections zero-filled at test), `zeros_missing` (`recovery=zeros` from
the same stage 1), `imder_fast` (`:fast` from the same stage 1). `spec('authors')`: the config
as it is instead of its `cpu` variant.
"""

from mmer_jax import tables

RATES = ('0.0', '0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7')
METRICS = ('mae', 'acc2', 'f1', 'acc7', 'corr')
CONFIG = 'configs/imder_mosi.py:synthetic'


def spec(scale: str = 'cpu') -> tables.Spec:
  config = CONFIG + (',cpu' if scale == 'cpu' else '')
  rates = ', '.join(RATES)
  return tables.Spec(
      name=f'IMDer on synthetic/mosi ({scale} scale)', config=config,
      overrides=(f'--config.eval.rates=({rates})', "--config.eval.conditions=('full',)"),
      rows={'imder': tables.Row(),
            'zeros_complete': tables.Row(results_of=('imder', 'stage1')),
            'zeros_missing': tables.Row(overrides=('--config.method.recovery=zeros',),
                                        link={'stage1': 'imder'}),
            'imder_fast': tables.Row(config=config + ',fast', link={'stage1': 'imder'})},
      conditions=tuple(f'rate={r}' for r in RATES), metrics=METRICS,
      orderings=tuple(tables.Ordering('imder', worse, m, f'rate={r}', f'IMDer beats {worse}')
                      for worse in ('zeros_complete', 'zeros_missing') for r in RATES
                      for m in METRICS if r != '0.0'),
      lower_is_better=('mae',))
