"""Tests for stages.py: resolving a config into its stages, the plan, and `init_from`, on tiny
configs and pytrees: no training."""

from __future__ import annotations

import copy

import ml_collections
import numpy as np
import pytest

from configs import fusion_iemocap
from configs import mmin_iemocap
from mmer_jax import checkpoint
from mmer_jax import stages


def test_a_config_without_stages_is_one_run_in_the_workdir():
  config = stages.resolve(fusion_iemocap.get_config('smoke'))
  assert config.resolved and config.is_locked
  plan = stages.plan(config, '/w')
  assert [(s.name, s.workdir) for s in plan] == [('main', '/w')]
  assert stages.resolve(config) is not config and stages.resolve(config).to_dict() == config.to_dict()


def test_stage_plan_and_errors():
  config = mmin_iemocap.get_config('smoke')
  plan = stages.plan(stages.resolve(config), '/w')
  assert [(s.name, s.workdir) for s in plan] == [('stage1', '/w/stage1'), ('mmin', '/w/mmin')]
  assert plan[-1].config.init_from.workdir == '/w/stage1' and not plan[-1].config.stages
  assert plan[0].config.init_from.workdir is None and plan[0].config.stage_name == 'stage1'
  bad = copy.deepcopy(config)
  bad.init_from.stage = 'nonexistent'
  with pytest.raises(ValueError, match='no such earlier stage'):
    stages.resolve(bad)
  both = copy.deepcopy(config)
  both.init_from.workdir = '/elsewhere'
  with pytest.raises(ValueError, match='not both'):
    stages.resolve(both)
  clash = copy.deepcopy(config)
  clash.stage_name = 'stage1'
  with pytest.raises(ValueError, match='share the main stage name'):
    stages.resolve(clash)


def test_apply_init_from_restores_named_subtrees(tmp_path):
  source = tmp_path / 'source'
  saved = {'encoders': {'w': np.full((2, 3), 7.0, np.float32)}, 'head': {'b': np.ones(2, np.float32)}}
  _, best = checkpoint.create_managers(str(source))
  checkpoint.save(best, 1, {'params': saved}, {})
  params = {'encoders': {'w': np.zeros((2, 3), np.float32)}, 'teacher': {'w': np.zeros((2, 3), np.float32)},
            'head': {'b': np.zeros(2, np.float32)}}
  init = stages.empty_init_from()
  init.workdir = str(source)
  init.params = ml_collections.ConfigDict({'encoders': 'encoders', 'teacher': 'encoders'})
  with pytest.raises(FileNotFoundError, match='not a finished run'):
    stages.apply_init_from(params, init)
  (source / 'results.json').write_text('{}')
  out = stages.apply_init_from(params, init)
  np.testing.assert_array_equal(out['encoders']['w'], 7.0)
  np.testing.assert_array_equal(out['teacher']['w'], 7.0)
  np.testing.assert_array_equal(out['head']['b'], 0.0)  # not named: untouched
  assert out['teacher']['w'] is not out['encoders']['w']  # own buffers each
  init.params = ml_collections.ConfigDict({'encoders': 'classifier'})
  with pytest.raises(KeyError, match="no parameter subtree 'classifier'"):
    stages.apply_init_from(params, init)
  init.params = ml_collections.ConfigDict({'encoders': 'head'})
  with pytest.raises(ValueError, match='does not fit'):
    stages.apply_init_from(params, init)
  assert stages.apply_init_from(params, stages.empty_init_from()) is params
