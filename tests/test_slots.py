"""ops/slots.py: work on the active (modality, example) slots only, in chunks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax.ops import slots


def _active(seed, m=3, b=10, p=0.4):
  return jnp.asarray(np.random.default_rng(seed).random((m, b)) < p)


def test_chunk_positions_list_each_modalitys_active_examples_in_order():
  active = jnp.asarray([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  pos, valid = slots.chunk_positions(active, 2)
  assert pos.shape == valid.shape == (3, 3, 2)  # ceil(5 / 2) chunks
  flat = np.asarray(pos).transpose(1, 0, 2).reshape(3, -1)
  np.testing.assert_array_equal(flat[0], [0, 2, 3, 5, 5, 5])
  np.testing.assert_array_equal(flat[1], [5, 5, 5, 5, 5, 5])
  np.testing.assert_array_equal(flat[2], [0, 1, 2, 3, 4, 5])
  np.testing.assert_array_equal(np.asarray(valid).transpose(1, 0, 2).reshape(3, -1),
                                flat < 5)


@pytest.mark.parametrize('chunk', [1, 3, 4, 10])
def test_over_slots_equals_the_function_on_every_slot_masked(chunk):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 10, 4))
  w = jnp.arange(3.)[:, None, None] + 1.
  fn = lambda v: (jnp.tanh(v * w[:, :, :1]), jnp.sum(v, -1))  # noqa: E731  per slot, per modality
  for seed in range(4):
    active = _active(seed)
    got = slots.over_slots(fn, active, chunk, x)
    full = fn(x)
    np.testing.assert_allclose(got[0], jnp.where(active[..., None], full[0], 0.), rtol=1e-6)
    np.testing.assert_allclose(got[1], jnp.where(active, full[1], 0.), rtol=1e-6)


def test_empty_chunks_are_skipped_and_complete_batches_run_nothing():
  calls = []

  def fn(v):
    jax.debug.callback(lambda: calls.append(1))
    return v * 2.

  x = jnp.ones((3, 8, 2))
  out = jax.jit(lambda a: slots.over_slots(fn, a, 4, x))
  jax.block_until_ready(out(jnp.zeros((3, 8), bool)))
  assert not calls
  few = jnp.zeros((3, 8), bool).at[1, 5].set(True).at[0, 0].set(True)
  np.testing.assert_array_equal(out(few)[:, :, 0], np.where(few, 2., 0.))
  jax.effects_barrier()
  assert len(calls) == 1  # two chunks, the second empty: one run


def test_gradients_through_the_slots_equal_the_masked_full_gradients():
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 9, 2))
  active = _active(3, b=9, p=0.5)

  def loss(w, chunked):
    fn = lambda v: jnp.sum(jnp.sin(v * w[:, None, None]), -1)  # noqa: E731
    out = slots.over_slots(fn, active, 4, x) if chunked else jnp.where(active, fn(x), 0.)
    return jnp.sum(out ** 2)

  w = jnp.asarray([0.5, -1.0, 2.0])
  np.testing.assert_allclose(jax.grad(loss)(w, True), jax.grad(loss)(w, False), rtol=1e-5)


def test_chunk_size_is_a_share_of_the_batch():
  assert slots.chunk_size(32, 0.5) == 16
  assert slots.chunk_size(32, 1.0) == 32
  assert slots.chunk_size(33, 0.5) == 17
  assert slots.chunk_size(4, 0.01) == 1
  with pytest.raises(ValueError, match='fraction'):
    slots.chunk_size(32, 0.)
