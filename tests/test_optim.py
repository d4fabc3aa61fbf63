"""optim.create_optimizer / create_learning_rate against closed forms and reference optax chains."""

from __future__ import annotations

import copy
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

_REPO = str(pathlib.Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax import optim  # pylint: disable=g-import-not-at-top,wrong-import-position


def make_config(**overrides):
  """An unlocked copy of the default optimiser config with `overrides` applied."""
  config = copy.deepcopy(default.get_config().optimizer)
  config.unlock()
  for key, value in overrides.items():
    config[key] = value
  return config


def sgd_config(**overrides):
  """Plain SGD (no momentum): the update is -lr * (transformed) gradient, easy to check."""
  return make_config(**{'name': 'sgd', 'b1': 0.0, 'learning_rate': 0.1, **overrides})


def params_and_grads(seed=0):
  rng = np.random.default_rng(seed)
  params = {'dense': {'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                      'bias': jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
            'scale': jnp.asarray(rng.normal(size=(2,)), jnp.float32)}
  grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 3.0, jnp.float32),
                                 params)
  return params, grads


def leaves(tree):
  return np.concatenate([np.asarray(x).reshape(-1) for x in jax.tree_util.tree_leaves(tree)])


def assert_tree_close(a, b, **kw):
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


def run_steps(tx, params, grads_fn, num_steps, **extra):
  state = tx.init(params)
  history = []
  for i in range(num_steps):
    updates, state = tx.update(grads_fn(i), state, params, **extra)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return params, history


# -- weight decay ---------------------------------------------------------------------------------


@pytest.mark.parametrize('name', ['adamw', 'adam'])
def test_decoupled_weight_decay_shrinks_params_with_zero_grads(name):
  lr, wd = 0.01, 0.1
  tx = optim.create_optimizer(make_config(name=name, learning_rate=lr, weight_decay=wd,
                                          weight_decay_mode='decoupled'), 10, 5)
  params, _ = params_and_grads()
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  _, history = run_steps(tx, params, lambda i: zeros, 4)
  for k, p in enumerate(history, start=1):
    # Adam's update of a zero gradient is exactly 0; AdamW then subtracts lr * wd * p per step.
    expected = jax.tree_util.tree_map(lambda x, k=k: x * (1.0 - lr * wd) ** k, params)
    assert_tree_close(p, expected, rtol=1e-6, atol=1e-7)
  assert not np.allclose(leaves(history[-1]), leaves(params))


def test_zero_weight_decay_leaves_params_unchanged_with_zero_grads():
  tx = optim.create_optimizer(make_config(name='adamw', weight_decay=0.0), 10, 5)
  params, _ = params_and_grads()
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  final, _ = run_steps(tx, params, lambda i: zeros, 3)
  assert_tree_close(final, params, rtol=0, atol=0)


def test_l2_weight_decay_equals_adam_on_decayed_grads():
  lr, wd = 0.01, 0.05
  config = make_config(name='adam', learning_rate=lr, b1=0.5, weight_decay=wd, weight_decay_mode='l2')
  tx = optim.create_optimizer(config, 10, 5)
  reference = optax.adam(lr, b1=0.5, b2=config.b2, eps=config.eps)
  params, _ = params_and_grads()
  grads = [params_and_grads(seed)[1] for seed in range(1, 6)]
  state, ref_state, ref_params = tx.init(params), reference.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    # torch.optim.Adam(weight_decay=wd): Adam on g + wd * w.
    decayed = jax.tree_util.tree_map(lambda gi, pi: gi + wd * pi, g, ref_params)
    ref_updates, ref_state = reference.update(decayed, ref_state, ref_params)
    ref_params = optax.apply_updates(ref_params, ref_updates)
    assert_tree_close(params, ref_params, rtol=1e-6, atol=1e-7)


def test_l2_differs_from_decoupled():
  params, grads = params_and_grads()
  out = {}
  for mode in ('l2', 'decoupled'):
    tx = optim.create_optimizer(make_config(name='adam', weight_decay=0.1, weight_decay_mode=mode), 10, 5)
    out[mode], _ = run_steps(tx, params, lambda i: grads, 3)
  assert not np.allclose(leaves(out['l2']), leaves(out['decoupled']))


def test_sgd_decoupled_weight_decay():
  lr, wd = 0.1, 0.2
  tx = optim.create_optimizer(sgd_config(learning_rate=lr, weight_decay=wd), 10, 5)
  params, grads = params_and_grads()
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = jax.tree_util.tree_map(lambda g, p: -lr * (g + wd * p), grads, params)
  assert_tree_close(updates, expected, rtol=1e-6, atol=1e-7)


def test_bad_weight_decay_mode_and_names_raise():
  with pytest.raises(ValueError, match='weight_decay_mode'):
    optim.create_optimizer(make_config(weight_decay_mode='torch'), 10, 5)
  with pytest.raises(ValueError, match='optimizer.name'):
    optim.create_optimizer(make_config(name='lamb'), 10, 5)
  with pytest.raises(ValueError, match='schedule'):
    optim.create_learning_rate(make_config(schedule='step'), 10, 5)


# -- clipping ---------------------------------------------------------------------------------------


def test_clip_by_global_norm():
  lr, clip = 0.1, 1.5
  tx = optim.create_optimizer(sgd_config(learning_rate=lr, clip_norm=clip), 10, 5)
  params, grads = params_and_grads()
  norm = np.linalg.norm(leaves(grads))
  assert norm > clip
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = jax.tree_util.tree_map(lambda g: -lr * g * clip / norm, grads)
  assert_tree_close(updates, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(leaves(updates)), lr * clip, rtol=1e-5)


def test_clip_by_global_norm_leaves_small_grads():
  lr = 0.1
  params, grads = params_and_grads()
  norm = float(np.linalg.norm(leaves(grads)))
  tx = optim.create_optimizer(sgd_config(learning_rate=lr, clip_norm=2.0 * norm), 10, 5)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert_tree_close(updates, jax.tree_util.tree_map(lambda g: -lr * g, grads), rtol=1e-6, atol=1e-7)


def test_clip_by_value():
  lr, clip = 0.1, 0.7
  tx = optim.create_optimizer(sgd_config(learning_rate=lr, clip_value=clip), 10, 5)
  params, grads = params_and_grads()
  assert np.abs(leaves(grads)).max() > clip
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = jax.tree_util.tree_map(lambda g: -lr * np.clip(np.asarray(g), -clip, clip), grads)
  assert_tree_close(updates, expected, rtol=1e-6, atol=1e-7)


def test_clip_value_then_norm():
  lr, value, norm_clip = 0.1, 0.7, 1.0
  tx = optim.create_optimizer(sgd_config(learning_rate=lr, clip_value=value, clip_norm=norm_clip), 10, 5)
  params, grads = params_and_grads()
  clipped = jax.tree_util.tree_map(lambda g: np.clip(np.asarray(g), -value, value), grads)
  norm = np.linalg.norm(leaves(clipped))
  assert norm > norm_clip
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = jax.tree_util.tree_map(lambda g: -lr * g * norm_clip / norm, clipped)
  assert_tree_close(updates, expected, rtol=1e-5, atol=1e-7)


# -- learning-rate schedules -----------------------------------------------------------------------


def test_constant_schedule():
  lr = optim.create_learning_rate(make_config(learning_rate=3e-4), 7, 4)
  for step in (0, 1, 13, 27, 28, 100):
    np.testing.assert_allclose(float(lr(step)), 3e-4, rtol=1e-6)


def test_linear_decay_schedule():
  base, spe, epochs, hold_epochs = 2e-3, 10, 5, 2
  lr = optim.create_learning_rate(make_config(learning_rate=base, schedule='linear_decay',
                                              constant_epochs=hold_epochs), spe, epochs)
  total, hold = spe * epochs, spe * hold_epochs  # 50, 20: then 30 steps of decay
  for step in (0, 1, 10, hold - 1, hold):
    np.testing.assert_allclose(float(lr(step)), base, rtol=1e-6)
  for step in (25, 35, 41, 49):
    np.testing.assert_allclose(float(lr(step)), base * (total - step) / (total - hold), rtol=1e-5)
  np.testing.assert_allclose(float(lr(total)), 0.0, atol=1e-12)
  values = [float(lr(s)) for s in range(total + 1)]
  assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_decay_without_constant_epochs():
  base = 1e-3
  lr = optim.create_learning_rate(make_config(learning_rate=base, schedule='linear_decay'), 4, 5)
  np.testing.assert_allclose(float(lr(0)), base, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), base / 2, rtol=1e-5)
  np.testing.assert_allclose(float(lr(20)), 0.0, atol=1e-12)


def test_warmup_then_constant():
  base, spe = 1e-3, 10
  lr = optim.create_learning_rate(make_config(learning_rate=base, warmup_epochs=1), spe, 5)
  np.testing.assert_allclose(float(lr(0)), 0.0, atol=1e-12)
  np.testing.assert_allclose(float(lr(5)), base / 2, rtol=1e-5)
  np.testing.assert_allclose(float(lr(spe)), base, rtol=1e-6)
  np.testing.assert_allclose(float(lr(49)), base, rtol=1e-6)


def test_warmup_then_linear_decay():
  base, spe, epochs = 1e-3, 10, 6
  lr = optim.create_learning_rate(make_config(learning_rate=base, warmup_epochs=1, schedule='linear_decay',
                                              constant_epochs=1), spe, epochs)
  np.testing.assert_allclose(float(lr(0)), 0.0, atol=1e-12)
  np.testing.assert_allclose(float(lr(5)), base / 2, rtol=1e-5)
  for step in (10, 15, 20):  # warmup done, then one constant epoch
    np.testing.assert_allclose(float(lr(step)), base, rtol=1e-6)
  np.testing.assert_allclose(float(lr(40)), base / 2, rtol=1e-5)  # decays over steps 20..60
  np.testing.assert_allclose(float(lr(spe * epochs)), 0.0, atol=1e-12)


def test_cosine_schedule_ends_at_zero():
  base = 1e-3
  lr = optim.create_learning_rate(make_config(learning_rate=base, schedule='cosine'), 10, 4)
  np.testing.assert_allclose(float(lr(0)), base, rtol=1e-6)
  np.testing.assert_allclose(float(lr(20)), base / 2, rtol=1e-5)
  np.testing.assert_allclose(float(lr(40)), 0.0, atol=1e-12)


def test_schedule_drives_the_optimizer():
  """The schedule reaches the updates: SGD's step is -lr(step) * g."""
  base, spe = 0.1, 2
  tx = optim.create_optimizer(sgd_config(learning_rate=base, schedule='linear_decay'), spe, 2)
  lr = optim.create_learning_rate(sgd_config(learning_rate=base, schedule='linear_decay'), spe, 2)
  params, grads = params_and_grads()
  state = tx.init(params)
  for step in range(4):
    updates, state = tx.update(grads, state, params)
    expected = jax.tree_util.tree_map(lambda g, s=step: -float(lr(s)) * g, grads)
    assert_tree_close(updates, expected, rtol=1e-5, atol=1e-8)


# -- reduce on plateau ------------------------------------------------------------------------------


def plateau_scales(values, *, spe, patience, factor):
  """Per step, the scale reduce_on_plateau applies (SGD update / (-lr * g))."""
  lr = 0.1
  config = sgd_config(learning_rate=lr, reduce_on_plateau=True, plateau_patience=patience,
                      plateau_factor=factor)
  tx = optim.create_optimizer(config, spe, 100)
  params = {'w': jnp.ones((2,), jnp.float32)}
  grads = {'w': jnp.ones((2,), jnp.float32)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  scales = []
  for value in values:
    updates, state = update(grads, state, params, value=jnp.asarray(value, jnp.float32))
    scales.append(float(updates['w'][0]) / -lr)
  return np.asarray(scales)


def test_reduce_on_plateau_reduces_after_patience_epochs():
  spe, patience, factor = 3, 2, 0.5
  epochs = 1 + 2 * patience + 1
  scales = plateau_scales([1.0] * (spe * epochs), spe=spe, patience=patience, factor=factor)
  first_of_epoch = scales[::spe]
  # Epoch 0 sets the best value; after `patience` epochs without improvement the scale drops,
  # and again after `patience` more.
  expected = [1.0] * (1 + patience) + [factor] * patience + [factor**2]
  np.testing.assert_allclose(first_of_epoch, expected, rtol=1e-6)
  assert np.all(np.diff(scales) <= 0)  # never goes back up


def test_reduce_on_plateau_keeps_scale_while_improving():
  spe = 2
  values = [10.0 / (1 + i // spe) for i in range(spe * 8)]  # strictly better every epoch
  scales = plateau_scales(values, spe=spe, patience=2, factor=0.5)
  np.testing.assert_allclose(scales, 1.0, rtol=1e-6)


# -- frozen parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize('overrides', [
    dict(name='adamw', weight_decay=0.1),
    dict(name='adam', weight_decay=0.1, weight_decay_mode='l2', clip_norm=1.0),
    dict(name='sgd', b1=0.9, weight_decay=0.1, schedule='linear_decay', reduce_on_plateau=True),
])
def test_trainable_mask_false_params_never_change(overrides):
  params, grads = params_and_grads()
  mask = {'dense': {'kernel': True, 'bias': False}, 'scale': False}
  tx = optim.create_optimizer(make_config(**overrides), 5, 3, mask)
  final, history = run_steps(tx, params, lambda i: params_and_grads(i + 1)[1], 6,
                             value=jnp.asarray(1.0, jnp.float32))
  for p in history:
    np.testing.assert_array_equal(np.asarray(p['dense']['bias']), np.asarray(params['dense']['bias']))
    np.testing.assert_array_equal(np.asarray(p['scale']), np.asarray(params['scale']))
  assert not np.allclose(np.asarray(final['dense']['kernel']), np.asarray(params['dense']['kernel']))
