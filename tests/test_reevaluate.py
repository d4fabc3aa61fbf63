"""mmer_jax/reevaluate.py: a finished run's selected checkpoint evaluated again reproduces its
grid row, and a changed field changes what is evaluated."""

import json

import pytest

from mmer_jax import reevaluate
from mmer_jax import train
from test_sweep import tiny_fusion


def test_reevaluation_reproduces_the_runs_rate_row(tmp_path):
  config = tiny_fusion()
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  row = next(r['metrics'] for r in results['rows'] if r['condition'] == 'rate=0.5')
  restored = reevaluate.Restored(str(tmp_path / 'run'))
  assert restored.metrics_at(0.5) == pytest.approx(row, abs=1e-7)
  other = restored.metrics_at(0.5, {'seed': config.seed + 1})  # other masks drawn at rate 0.5
  assert other != pytest.approx(row, abs=1e-7)
  assert json.loads((tmp_path / 'run' / 'results.json').read_text())['rows'] == results['rows']


def test_a_run_without_a_checkpoint_is_named(tmp_path):
  config = tiny_fusion()
  train.write_config(config, str(tmp_path / 'empty'))
  with pytest.raises(FileNotFoundError, match='checkpoints/best'):
    reevaluate.Restored(str(tmp_path / 'empty'))
