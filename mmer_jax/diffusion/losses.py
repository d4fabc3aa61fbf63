"""Denoising score matching: the per-example loss that trains a score network for any SDE here.

For x0, a time t ~ U(eps, 1) and z ~ N(0, I), the perturbed sample is x_t = mean(x0, t) + std(t) z
and the loss is ||std(t) score(x_t, t) + z||^2 summed over the non-batch axes (the std^2-weighted
DSM objective of Song et al., in IMDer's form). It is returned per example, not averaged, so the
caller can mask examples (e.g. modalities that are not missing) before taking a mean.

`draw_perturbation` and `score_matching_loss_at` split the random draw from the loss so the caller
can reuse z (IMDer perturbs its condition with the same z) and tests can fix t and z.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmer_jax.diffusion import sde as sde_lib


def draw_perturbation(key: jax.Array, x0: jax.Array, sde, *, eps: float = 1e-5):
  """(t, z): t ~ U(eps, T) per example ([B]) and z ~ N(0, I) shaped like x0.

  eps keeps t away from 0, where the VE std vanishes and std * score is ill-conditioned.
  """
  t_key, z_key = jax.random.split(key)
  t = jax.random.uniform(t_key, x0.shape[:1], x0.dtype, minval=eps, maxval=sde.T)
  return t, jax.random.normal(z_key, x0.shape, x0.dtype)


def perturb(x0: jax.Array, t: jax.Array, z: jax.Array, sde):
  """(x_t, std): the sample of p_0t(. | x0) that noise z gives, and its [B] std."""
  mean, std = sde.marginal_prob(x0, t)
  return mean + sde_lib.batch_broadcast(std, x0) * z, std


def score_matching_loss_at(score_fn, x0: jax.Array, t: jax.Array, z: jax.Array, sde) -> jax.Array:
  """The per-example [B] DSM loss sum((std score(x_t, t) + z)^2) for given t and z."""
  x_t, std = perturb(x0, t, z, sde)
  residual = sde_lib.batch_broadcast(std, x0) * score_fn(x_t, t) + z
  return jnp.sum(jnp.square(residual), axis=tuple(range(1, x0.ndim)))


def score_matching_loss(score_fn, x0: jax.Array, key: jax.Array, sde, *,
                        eps: float = 1e-5) -> jax.Array:
  """The per-example [B] DSM loss at a fresh t ~ U(eps, 1) and z ~ N(0, I) drawn from key."""
  t, z = draw_perturbation(key, x0, sde, eps=eps)
  return score_matching_loss_at(score_fn, x0, t, z, sde)
