"""Tests for complexity.py: its helpers, and the complexity `compare` reports of a trained run."""

import json
import math
import os

import jax
import numpy as np
import pytest
import toy_data

from configs import fusion_iemocap
from mmer_jax import checkpoint
from mmer_jax import compare
from mmer_jax import complexity
from mmer_jax import train


def test_complexity_helpers(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps(
      {'seed': 0, 'stage_name': 'mmin', 'stages': {'stage1': {'eval': {'rates': [0.0, 0.5]}}},
       'eval': {'rates': [0.0, 0.5], 'conditions': ['full', 'a']}, 'train': {'max_steps': None}}))
  config = complexity.load_config(str(tmp_path / 'config.json'))
  assert config.eval.rates == (0.0, 0.5) and config.stages.stage1.eval.rates == (0.0, 0.5)
  assert config.train.max_steps is None
  # A staged run's final model is the main stage's, in its own directory.
  assert complexity.best_checkpoint_dir('run', config) == os.path.join('run', 'mmin')
  with config.unlocked():
    config.stages = {}
  assert complexity.best_checkpoint_dir('run', config) == 'run'
  assert complexity.checkpoint_shapes(str(tmp_path), config) is None  # none, and none created
  assert not (tmp_path / 'checkpoints').exists()
  params = {'net': {'w': np.zeros((3, 4)), 'b': np.zeros(4)},
            'fitted': jax.ShapeDtypeStruct((5, 2), np.float32)}
  mask = {'net': {'w': True, 'b': True}, 'fitted': False}
  assert complexity.count_parameters(params, mask) == (16, 26)


def test_complexity_of_a_trained_smoke_run(tmp_path):
  """A real `:smoke` run (tiny encoders, one epoch, on a toy feature directory), compared with
  the complexity table: the parameter count is the checkpoint's, FLOPs and memory are positive."""
  config = fusion_iemocap.get_config('smoke')
  config.data.features_dir = str(toy_data.write_features_dir(tmp_path / 'toy', n=48))
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.prefetch = 0
  config.method.encoders.embed_dim, config.method.encoders.num_filters = 8, 4
  config.method.head.hidden = (8,)
  config.train.num_epochs = 1
  config.eval.conditions, config.eval.rates = ('full', 'a'), (0.0, 0.5)
  run_dir = str(tmp_path / 'run')
  train.train_and_evaluate(config, run_dir)

  report = compare.compare([run_dir], str(tmp_path / 'out'), metrics=['ua'], complexity_steps=1,
                           complexity_warmup=0)
  c = report['entries'][0]['complexity']
  assert 'error' not in c, c
  params = checkpoint.restore_params(checkpoint.create_managers(run_dir)[1])
  size = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
  assert c['params_from'] == 'checkpoint' and c['params_trainable'] == c['params_total'] == size
  assert c['flops_per_example'] > 0
  assert c['flops_per_step'] == pytest.approx(c['flops_per_example'] * c['examples_per_step'])
  assert c['memory_bytes']['total'] > 0 and c['step_s_median'] > 0
  text = (tmp_path / 'out' / 'complexity.md').read_text()
  assert f"| early_fusion | {size:,} | {size:,} |" in text
  assert (tmp_path / 'out' / 'robustness_ua.png').exists()
  assert 'complexity.md' in (tmp_path / 'out' / 'compare.md').read_text()
