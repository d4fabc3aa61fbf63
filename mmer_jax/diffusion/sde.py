"""Forward SDEs on t in [0, 1]: their coefficients, Gaussian marginals, priors and discretisations.

Two SDEs share one interface so losses and samplers never branch on the kind:

* `VESDE(sigma)`: dx = sigma^t dw. Its perturbation kernel is N(x0, std(t)^2) with
  std(t)^2 = (sigma^(2t) - 1) / (2 ln sigma), so std(0) = 0 and d(std^2)/dt = sigma^(2t), the
  squared diffusion. This is IMDer's SDE (sigma = 25).
* `VPSDE(beta_min, beta_max)`: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw with a linear beta(t),
  score_sde's variance-preserving SDE (the continuous limit of DDPM).

Times are [B] arrays, one per example, broadcast over the other axes of x. The objects are frozen
dataclasses of Python floats: hashable, so they can be closed over or passed as static jit
arguments. `reverse(score_fn)` builds the reverse-time SDE (or probability-flow ODE) that the
samplers integrate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def batch_broadcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a per-example [B] array to [B, 1, ..., 1] so it broadcasts against x."""
  v = jnp.asarray(v)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def check_num_steps(num_steps, minimum: int = 1) -> int:
  """The number of steps as an int, or a ValueError: it sizes loops, so it must be static."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, int):
    raise ValueError(f'num_steps must be a Python int, got {num_steps!r}')
  if num_steps < minimum:
    raise ValueError(f'num_steps must be >= {minimum}, got {num_steps}')
  return num_steps


@dataclasses.dataclass(frozen=True)
class VESDE:
  """Variance-exploding SDE dx = sigma^t dw (Song et al.'s tutorial form, as in IMDer)."""

  sigma: float = 25.0

  def __post_init__(self):
    if not self.sigma > 1.0:
      raise ValueError(f'VESDE needs sigma > 1, got {self.sigma}')

  @property
  def T(self) -> float:  # noqa: N802 (score_sde's name)
    return 1.0

  @property
  def _log_sigma(self) -> float:
    return math.log(self.sigma)

  def variance(self, t: jax.Array) -> jax.Array:
    """std(t)^2 = (sigma^(2t) - 1) / (2 ln sigma); expm1 keeps it accurate for small t."""
    return jnp.expm1(2.0 * t * self._log_sigma) / (2.0 * self._log_sigma)

  def marginal_std(self, t: jax.Array) -> jax.Array:
    """The std of the perturbation kernel p_0t(x(t) | x(0)) at times t ([B])."""
    return jnp.sqrt(self.variance(t))

  def std_to_t(self, std: jax.Array) -> jax.Array:
    """The time whose marginal std is `std` (inverse of marginal_std), for std-spaced grids."""
    return jnp.log1p(2.0 * self._log_sigma * jnp.square(std)) / (2.0 * self._log_sigma)

  def diffusion(self, t: jax.Array) -> jax.Array:
    """g(t) = sigma^t ([B])."""
    return jnp.exp(t * self._log_sigma)

  def sde(self, x: jax.Array, t: jax.Array):
    """(drift, diffusion) of the forward SDE: zero drift, [B] diffusion sigma^t."""
    return jnp.zeros_like(x), self.diffusion(t)

  def marginal_prob(self, x: jax.Array, t: jax.Array):
    """(mean, std) of p_0t(. | x0 = x): mean x, std [B]."""
    return x, self.marginal_std(t)

  def prior_sampling(self, key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """N(0, std(1)^2): zero-mean noise scaled by the marginal std at t = 1 (IMDer's init)."""
    return jax.random.normal(key, shape, dtype) * self.marginal_std(jnp.asarray(self.T, dtype))

  def discretize(self, x: jax.Array, t: jax.Array, num_steps: int):
    """(f, G) of the SMLD step between t - dt and t, dt = 1/num_steps.

    x_t = x_{t-dt} + f + G z with f = 0, G = sqrt(std(t)^2 - std(t - dt)^2) (std(<0) read as
    std(0) = 0), so chaining the steps reproduces the marginal variance exactly.
    """
    dt = 1.0 / check_num_steps(num_steps)
    previous = self.variance(jnp.maximum(t - dt, 0.0))
    return jnp.zeros_like(x), jnp.sqrt(jnp.maximum(self.variance(t) - previous, 0.0))

  def corrector_alpha(self, t: jax.Array, num_steps: int) -> jax.Array:
    """The Langevin corrector's alpha: 1 for VE (score_sde's LangevinCorrector)."""
    del num_steps
    return jnp.ones_like(t)

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> 'ReverseSDE':
    """The reverse-time SDE (or probability-flow ODE) driven by score_fn."""
    return ReverseSDE(self, score_fn, probability_flow)


@dataclasses.dataclass(frozen=True)
class VPSDE:
  """Variance-preserving SDE dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw, beta linear in t."""

  beta_min: float = 0.1
  beta_max: float = 20.0

  def __post_init__(self):
    if not 0.0 <= self.beta_min <= self.beta_max:
      raise ValueError(f'VPSDE needs 0 <= beta_min <= beta_max, got {self.beta_min}, '
                       f'{self.beta_max}')

  @property
  def T(self) -> float:  # noqa: N802
    return 1.0

  def beta(self, t: jax.Array) -> jax.Array:
    """beta(t) = beta_min + t (beta_max - beta_min)."""
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def _log_mean_coeff(self, t: jax.Array) -> jax.Array:
    """log of the kernel's mean factor, -int_0^t beta / 2."""
    return -0.25 * jnp.square(t) * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def marginal_std(self, t: jax.Array) -> jax.Array:
    """sqrt(1 - exp(-int_0^t beta)) ([B])."""
    return jnp.sqrt(-jnp.expm1(2.0 * self._log_mean_coeff(t)))

  def diffusion(self, t: jax.Array) -> jax.Array:
    """g(t) = sqrt(beta(t)) ([B])."""
    return jnp.sqrt(self.beta(t))

  def sde(self, x: jax.Array, t: jax.Array):
    """(drift, diffusion): drift -beta(t) x / 2, [B] diffusion sqrt(beta(t))."""
    return -0.5 * batch_broadcast(self.beta(t), x) * x, self.diffusion(t)

  def marginal_prob(self, x: jax.Array, t: jax.Array):
    """(mean, std) of p_0t(. | x0 = x): mean exp(-int beta / 2) x, std [B]."""
    return jnp.exp(batch_broadcast(self._log_mean_coeff(t), x)) * x, self.marginal_std(t)

  def prior_sampling(self, key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """N(0, I), the VP SDE's stationary law."""
    return jax.random.normal(key, shape, dtype)

  def _discrete_beta(self, t: jax.Array, num_steps: int) -> jax.Array:
    """DDPM's beta_i = beta(t) / N, as score_sde discretises its VP SDE."""
    num_steps = check_num_steps(num_steps)
    if self.beta_max >= num_steps:
      raise ValueError(f'VPSDE.discretize needs num_steps > beta_max ({self.beta_max}) so that '
                       f'every discrete beta is < 1, got {num_steps}')
    return self.beta(t) / num_steps

  def discretize(self, x: jax.Array, t: jax.Array, num_steps: int):
    """(f, G) of the DDPM step between t - dt and t: x_t = sqrt(1 - beta_i) x + sqrt(beta_i) z."""
    beta = self._discrete_beta(t, num_steps)
    f = (batch_broadcast(jnp.sqrt(1.0 - beta), x) - 1.0) * x
    return f, jnp.sqrt(beta)

  def corrector_alpha(self, t: jax.Array, num_steps: int) -> jax.Array:
    """The Langevin corrector's alpha: DDPM's 1 - beta_i (score_sde's LangevinCorrector)."""
    return 1.0 - self._discrete_beta(t, num_steps)

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> 'ReverseSDE':
    """The reverse-time SDE (or probability-flow ODE) driven by score_fn."""
    return ReverseSDE(self, score_fn, probability_flow)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
  """The reverse-time process of `forward` given a score (score_sde's construction).

  Both methods keep the forward time variable: `sde` gives the drift in dx = drift dt + g dw-bar
  with dt < 0 (so an Euler step from t to t - h is x - drift h + g sqrt(h) z), and `discretize`
  gives (f, G) with x_{t-dt} = x - f + G z. With probability_flow the noise vanishes and the
  score term halves: the deterministic ODE with the same marginals.
  """

  forward: object
  score_fn: ScoreFn
  probability_flow: bool = False

  @property
  def T(self) -> float:  # noqa: N802
    return self.forward.T

  @property
  def _score_weight(self) -> float:
    return 0.5 if self.probability_flow else 1.0

  def sde(self, x: jax.Array, t: jax.Array):
    """(f - w g^2 score, g or 0), w = 1 (SDE) or 1/2 (probability-flow ODE)."""
    drift, g = self.forward.sde(x, t)
    drift = drift - batch_broadcast(jnp.square(g), x) * self.score_fn(x, t) * self._score_weight
    return drift, jnp.zeros_like(g) if self.probability_flow else g

  def discretize(self, x: jax.Array, t: jax.Array, num_steps: int):
    """(f - w G^2 score, G or 0) of the forward discretisation, reversed."""
    f, g = self.forward.discretize(x, t, num_steps)
    f = f - batch_broadcast(jnp.square(g), x) * self.score_fn(x, t) * self._score_weight
    return f, jnp.zeros_like(g) if self.probability_flow else g


SDE = VESDE | VPSDE
