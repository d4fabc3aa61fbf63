"""Tests for steps.py (EMA, trainable partition), base.example_rngs and stages.py (resolution,
plans, init_from), on tiny pytrees and configs: no training."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import fusion_iemocap
from configs import mmin_iemocap
from mmer_jax import checkpoint
from mmer_jax import stages
from mmer_jax import steps
from mmer_jax.methods import base


def _params():
  return {'a': {'w': jnp.arange(6.0).reshape(2, 3)}, 'b': jnp.ones(3), 'frozen': jnp.full((2,), 5.0)}


def test_ema_mask_takes_only_the_masked_leaves_from_the_average():
  params = {'score': jnp.ones(3), 'head': jnp.ones(2)}
  state = steps.TrainState.create(params=params, tx=optax.sgd(0.1), rng=jax.random.PRNGKey(0),
                                  ema_decay=0.5, ema_mask={'score': True, 'head': False})
  new = state.apply_gradients({'score': jnp.ones(3), 'head': jnp.ones(2)})
  np.testing.assert_allclose(new.eval_params['score'], 0.95)  # 0.5 * 1 + 0.5 * 0.9
  np.testing.assert_allclose(new.eval_params['head'], 0.9)  # as trained
  np.testing.assert_allclose(new.ema_params['head'], 0.95)  # kept, not used


def test_ema_follows_the_parameters_and_is_checkpointed():
  params = _params()
  state = steps.TrainState.create(params=params, tx=optax.sgd(0.1), rng=jax.random.PRNGKey(0), ema_decay=0.75)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  new = state.apply_gradients(grads)
  for p0, p1, e in zip(*(jax.tree_util.tree_leaves(t) for t in (params, new.params, new.ema_params))):
    np.testing.assert_allclose(p1, p0 - 0.1)
    np.testing.assert_allclose(e, 0.75 * p0 + 0.25 * p1, rtol=1e-6)
  assert new.eval_params is new.ema_params and 'ema_params' in new.checkpoint_items()
  off = steps.TrainState.create(params=params, tx=optax.sgd(0.1), rng=jax.random.PRNGKey(0))
  assert off.ema_params is None and off.eval_params is off.params
  assert 'ema_params' not in off.checkpoint_items()
  # The state (EMA included) is a pytree a jitted step can take and return.
  stepped = jax.jit(lambda s, g: s.apply_gradients(g))(new, grads)
  assert int(stepped.step) == 2


def test_partition_and_combine_round_trip():
  params = _params()
  mask = {'a': {'w': True}, 'b': True, 'frozen': False}
  trainable, frozen, structure = steps.partition(params, mask)
  assert len(trainable) == 2 and len(frozen) == 1
  np.testing.assert_array_equal(frozen[0], params['frozen'])
  back = steps.combine(trainable, frozen, structure)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
  for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(x, y)


def test_example_rngs_depend_on_the_example_not_the_batch():
  rng = jax.random.PRNGKey(3)
  a = np.asarray(base.example_rngs(rng, {'index': np.array([4, 7, 9, -1])}))
  b = np.asarray(base.example_rngs(rng, {'index': np.array([9, 4])}))
  np.testing.assert_array_equal(a[0], b[1])
  np.testing.assert_array_equal(a[2], b[0])
  assert not np.array_equal(a[0], a[1])
  c = np.asarray(base.example_rngs(jax.random.PRNGKey(4), {'index': np.array([4])}))
  assert not np.array_equal(a[0], c[0])  # and on the evaluation's key


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
