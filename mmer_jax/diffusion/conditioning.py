"""A condition diffused with the sample: IMDer perturbs its condition like the sample it guides.

The authors' score network never sees the clean condition. In training the condition gets the
same noise as the sample, c_t = c + std(t) z (z the DSM noise); in sampling it gets fresh noise
at every step, c_t = c + std(t) n_t. `perturbed_condition_score` wraps a conditional score
network into the plain `score_fn(x, t)` the samplers take, with the second rule; the noise of an
evaluation at time t comes from `condition_noise(key, t, shape)`, a key folded with the bits of
t, so it is a pure function of (key, t): a sampler that evaluates one time twice (Heun's end
point and the next step's start) sees the same perturbed condition, and another implementation
can be fed exactly the noise this one used (the IMDer parity check does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmer_jax.diffusion import sde as sde_lib


def condition_noise(key: jax.Array, t: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """N(0, I) of `shape` keyed by (key, t); t is [B] with one common time (the samplers' case)."""
  time = jnp.asarray(t, jnp.float32).reshape(-1)[0]
  bits = jax.lax.bitcast_convert_type(time, jnp.uint32)
  return jax.random.normal(jax.random.fold_in(key, bits), shape, dtype)


def perturb_condition(condition: jax.Array, std: jax.Array, noise: jax.Array) -> jax.Array:
  """c + std z, std [B] broadcast over the condition's other axes."""
  return condition + sde_lib.batch_broadcast(std, condition) * noise


def perturbed_condition_score(network, condition: jax.Array, key: jax.Array, sde):
  """score_fn(x, t) = network(x, t, condition + std(t) n(key, t)) for the samplers.

  network(x, t, condition) is the conditional score; condition has the sample's batch axis.
  """
  def score_fn(x, t):
    noise = condition_noise(key, t, condition.shape, condition.dtype)
    return network(x, t, perturb_condition(condition, sde.marginal_std(t), noise))
  return score_fn
