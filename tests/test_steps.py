"""Tests for steps.py: the EMA of the parameters and the trainable partition, on tiny pytrees."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmer_jax import steps


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
