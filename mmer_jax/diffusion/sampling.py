"""Samplers that integrate a reverse-time SDE or probability-flow ODE from t = 1 down to t = eps.

`get_sampler(name, sde, shape, num_steps=...)` returns `sample(key, score_fn) -> (x, nfe)`, where
nfe (a Python int) counts score evaluations. Each sampler is one `lax.scan` over its steps, so its
jaxpr does not grow with num_steps and `jax.jit(lambda key: sample(key, score_fn)[0])` compiles
once per shape. The lower-level functions take an explicit initial sample (and, for
Euler-Maruyama, the noise) so they can be fed exactly what another implementation used.

Names: `euler_maruyama`, `pc`, `ode_heun`, `ode_rk4` and `dpm_solver` (VE only, order 1 or 2);
`sampler_nfe` gives a sampler's NFE without running it. Their grids and NFE:
docs/imder.md#the-diffusion-package-mmer_jaxdiffusion.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from mmer_jax.diffusion import sde as sde_lib

SAMPLERS = ('euler_maruyama', 'pc', 'ode_heun', 'ode_rk4', 'dpm_solver')
PREDICTORS = ('reverse_diffusion', 'euler_maruyama')
_DEFAULTS = {
    'euler_maruyama': {},
    'pc': {'predictor': 'reverse_diffusion', 'corrector_steps': 1, 'snr': 0.16},
    'ode_heun': {},
    'ode_rk4': {},
    'dpm_solver': {'order': 2},
}
_MIN_STEPS = {'euler_maruyama': 2}  # its step size is the gap between the first two grid times


def _times(t: jax.Array, x: jax.Array) -> jax.Array:
  """A scalar time as the [B] per-example times of x."""
  return jnp.full(x.shape[:1], t, x.dtype)


def _check_eps(eps: float, sde) -> None:
  if not 0.0 < eps < sde.T:
    raise ValueError(f'eps must lie in (0, {sde.T}), got {eps}')


# -- Euler-Maruyama -----------------------------------------------------------------------------


def _euler_maruyama_scan(score_fn, sde, init, xs, noise_of, num_steps: int, eps: float):
  """IMDer's Euler-Maruyama loop; noise_of maps each scanned element of xs to that step's noise."""
  times = jnp.linspace(sde.T, eps, num_steps, dtype=init.dtype)
  step_size = times[0] - times[1]
  reverse = sde.reverse(score_fn)

  def step(carry, inputs):
    x, _ = carry
    t, item = inputs
    drift, g = reverse.sde(x, _times(t, x))
    mean_x = x - drift * step_size
    x = mean_x + jnp.sqrt(step_size) * sde_lib.batch_broadcast(g, x) * noise_of(item)
    return (x, mean_x), None

  (_, mean_x), _ = jax.lax.scan(step, (init, init), (times, xs))
  return mean_x


def euler_maruyama(score_fn, sde, init: jax.Array, noises: jax.Array, eps: float = 1e-3):
  """Euler-Maruyama from init with the given per-step noise ([num_steps, *init.shape]).

  Returns the mean of the last step: at t = eps the remaining noise is below the data's scale,
  so IMDer (after Song's tutorial) returns the denoised mean rather than adding it.
  """
  num_steps = sde_lib.check_num_steps(noises.shape[0], _MIN_STEPS['euler_maruyama'])
  if noises.shape[1:] != init.shape:
    raise ValueError(f'noises must be [num_steps, *{init.shape}], got {noises.shape}')
  _check_eps(eps, sde)
  return _euler_maruyama_scan(score_fn, sde, init, noises, lambda z: z, num_steps, eps)


def _sample_euler_maruyama(key, score_fn, sde, shape, dtype, num_steps, eps):
  """Keyed EM: init from sde.prior_sampling(split[0]); step i's noise from fold_in(split[1], i)."""
  init_key, noise_key = jax.random.split(key)
  init = sde.prior_sampling(init_key, shape, dtype)

  def noise_of(i):
    return jax.random.normal(jax.random.fold_in(noise_key, i), shape, dtype)

  return _euler_maruyama_scan(score_fn, sde, init, jnp.arange(num_steps), noise_of, num_steps, eps)


# -- predictor-corrector ------------------------------------------------------------------------


def _per_example_norm(v: jax.Array) -> jax.Array:
  return jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)


def langevin_corrector(score_fn, sde, x, t, key, *, steps: int, snr: float, num_steps: int):
  """`steps` Langevin steps at fixed times t with score_sde's step rule.

  step = 2 alpha (snr ||z|| / ||score||)^2 with the norms taken per example (score_sde averages
  them over the batch; per example keeps each draw independent of its batch mates). An example
  whose score is exactly zero is left in place.
  """
  alpha = sde.corrector_alpha(t, num_steps)

  def body(i, x):
    grad = score_fn(x, t)
    noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
    grad_norm = _per_example_norm(grad)
    ratio = snr * _per_example_norm(noise) / jnp.where(grad_norm > 0, grad_norm, 1.0)
    step = jnp.where(grad_norm > 0, 2.0 * alpha * jnp.square(ratio), 0.0)
    step = sde_lib.batch_broadcast(step, x)
    return x + step * grad + jnp.sqrt(2.0 * step) * noise

  return jax.lax.fori_loop(0, steps, body, x)


def _predict(score_fn, sde, x, t, key, predictor: str, num_steps: int):
  """One predictor step from t to t - 1/num_steps: (x, its noise-free mean)."""
  reverse = sde.reverse(score_fn)
  noise = jax.random.normal(key, x.shape, x.dtype)
  if predictor == 'reverse_diffusion':
    f, g = reverse.discretize(x, t, num_steps)
    mean = x - f
    return mean + sde_lib.batch_broadcast(g, x) * noise, mean
  dt = 1.0 / num_steps
  drift, g = reverse.sde(x, t)
  mean = x - drift * dt
  return mean + sde_lib.batch_broadcast(g, x) * math.sqrt(dt) * noise, mean


def predictor_corrector(key, score_fn, sde, init: jax.Array, num_steps: int, eps: float = 1e-3, *,
                        predictor: str = 'reverse_diffusion', corrector_steps: int = 1,
                        snr: float = 0.16):
  """score_sde's PC sampler from init: at each t of linspace(1, eps, N), correct then predict.

  Predictor steps have size 1/N as in score_sde (the grid spacing is (1 - eps)/(N - 1)).
  Returns the last predictor's mean (score_sde's denoise=True).
  """
  num_steps = sde_lib.check_num_steps(num_steps)
  _check_eps(eps, sde)
  times = jnp.linspace(sde.T, eps, num_steps, dtype=init.dtype)

  def step(carry, inputs):
    x, _ = carry
    t, i = inputs
    t = _times(t, x)
    corrector_key, predictor_key = jax.random.split(jax.random.fold_in(key, i))
    x = langevin_corrector(score_fn, sde, x, t, corrector_key, steps=corrector_steps, snr=snr,
                           num_steps=num_steps)
    return _predict(score_fn, sde, x, t, predictor_key, predictor, num_steps), None

  (_, mean), _ = jax.lax.scan(step, (init, init), (times, jnp.arange(num_steps)))
  return mean


def _sample_pc(key, score_fn, sde, shape, dtype, num_steps, eps, **options):
  init_key, loop_key = jax.random.split(key)
  init = sde.prior_sampling(init_key, shape, dtype)
  return predictor_corrector(loop_key, score_fn, sde, init, num_steps, eps, **options)


# -- probability-flow ODE -----------------------------------------------------------------------


def _ode_drift(score_fn, sde):
  """dx/dt of the probability-flow ODE as a function of (x, scalar t)."""
  reverse = sde.reverse(score_fn, probability_flow=True)
  return lambda x, t: reverse.sde(x, _times(t, x))[0]


def _heun_step(drift, x, t0, t1):
  h = t1 - t0
  d0 = drift(x, t0)
  d1 = drift(x + h * d0, t1)
  return x + 0.5 * h * (d0 + d1)


def _rk4_step(drift, x, t0, t1):
  h = t1 - t0
  mid = t0 + 0.5 * h
  k1 = drift(x, t0)
  k2 = drift(x + 0.5 * h * k1, mid)
  k3 = drift(x + 0.5 * h * k2, mid)
  k4 = drift(x + h * k3, t1)
  return x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _integrate_ode(step_fn, score_fn, sde, init, num_steps: int, eps: float):
  """Integrates the probability-flow ODE from T to eps over num_steps equal intervals in t."""
  num_steps = sde_lib.check_num_steps(num_steps)
  _check_eps(eps, sde)
  times = jnp.linspace(sde.T, eps, num_steps + 1, dtype=init.dtype)
  drift = _ode_drift(score_fn, sde)

  def step(x, ts):
    return step_fn(drift, x, ts[0], ts[1]), None

  x, _ = jax.lax.scan(step, init, (times[:-1], times[1:]))
  return x


def ode_heun(score_fn, sde, init: jax.Array, num_steps: int, eps: float = 1e-3):
  """The probability-flow ODE from init by Heun's 2nd-order method (2 evaluations a step)."""
  return _integrate_ode(_heun_step, score_fn, sde, init, num_steps, eps)


def ode_rk4(score_fn, sde, init: jax.Array, num_steps: int, eps: float = 1e-3):
  """The probability-flow ODE from init by classical RK4 (4 evaluations a step)."""
  return _integrate_ode(_rk4_step, score_fn, sde, init, num_steps, eps)


def _sample_ode(step_fn, key, score_fn, sde, shape, dtype, num_steps, eps):
  init = sde.prior_sampling(key, shape, dtype)
  return _integrate_ode(step_fn, score_fn, sde, init, num_steps, eps)


# -- DPM-Solver (VE) ----------------------------------------------------------------------------


def _check_ve(sde) -> None:
  if not isinstance(sde, sde_lib.VESDE):
    raise ValueError(f'dpm_solver integrates the VE probability-flow ODE only; got '
                     f'{type(sde).__name__} (use ode_heun / ode_rk4 for it)')


def dpm_solver(score_fn, sde, init: jax.Array, num_steps: int, eps: float = 1e-3, *,
               order: int = 2):
  """DPM-Solver for the VE probability-flow ODE, steps uniform in log std from std(1) to std(eps).

  In the marginal std the VE ODE is dx/dstd = eps_theta(x, std) = -std score(x, t(std)), linear
  in std with no drift term, so order 1 is x_s = x_t + (std_s - std_t) eps_theta(x_t) (DDIM) and
  order 2 evaluates eps_theta at the log-std midpoint std_m = sqrt(std_t std_s) reached by an
  order-1 step (DPM-Solver-2 with r = 1/2).
  """
  _check_ve(sde)
  num_steps = sde_lib.check_num_steps(num_steps)
  _check_eps(eps, sde)
  if order not in (1, 2):
    raise ValueError(f'dpm_solver order must be 1 or 2, got {order!r}')
  dtype = init.dtype
  log_std = jnp.linspace(jnp.log(sde.marginal_std(jnp.asarray(sde.T, dtype))),
                         jnp.log(sde.marginal_std(jnp.asarray(eps, dtype))), num_steps + 1)
  stds = jnp.exp(log_std)

  def noise_prediction(x, std):
    return -std * score_fn(x, _times(sde.std_to_t(std), x))

  def step(x, pair):
    std_t, std_s = pair
    e_t = noise_prediction(x, std_t)
    if order == 1:
      return x + (std_s - std_t) * e_t, None
    std_m = jnp.sqrt(std_t * std_s)
    u = x + (std_m - std_t) * e_t
    return x + (std_s - std_t) * noise_prediction(u, std_m), None

  x, _ = jax.lax.scan(step, init, (stds[:-1], stds[1:]))
  return x


def _sample_dpm(key, score_fn, sde, shape, dtype, num_steps, eps, order):
  init = sde.prior_sampling(key, shape, dtype)
  return dpm_solver(score_fn, sde, init, num_steps, eps, order=order)


# -- by name ------------------------------------------------------------------------------------


def _resolve(name: str, num_steps, options: dict) -> dict:
  """The sampler's full options after validating name, num_steps and the given options."""
  if name not in SAMPLERS:
    raise ValueError(f'unknown sampler {name!r}; expected one of {SAMPLERS}')
  sde_lib.check_num_steps(num_steps, _MIN_STEPS.get(name, 1))
  unknown = sorted(set(options) - set(_DEFAULTS[name]))
  if unknown:
    raise ValueError(f'sampler {name!r} takes options {sorted(_DEFAULTS[name])}, got {unknown}')
  resolved = {**_DEFAULTS[name], **options}
  if name == 'pc':
    if resolved['predictor'] not in PREDICTORS:
      raise ValueError(f'pc predictor must be one of {PREDICTORS}, got {resolved["predictor"]!r}')
    steps = resolved['corrector_steps']
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
      raise ValueError(f'pc corrector_steps must be an int >= 0, got {steps!r}')
    if not resolved['snr'] > 0:
      raise ValueError(f'pc snr must be > 0, got {resolved["snr"]!r}')
  if name == 'dpm_solver' and resolved['order'] not in (1, 2):
    raise ValueError(f'dpm_solver order must be 1 or 2, got {resolved["order"]!r}')
  return resolved


def sampler_nfe(name: str, num_steps: int, **options) -> int:
  """Score evaluations of one `get_sampler(name, ...)` draw, without running it."""
  resolved = _resolve(name, num_steps, options)
  per_step = {
      'euler_maruyama': 1,
      'pc': 1 + resolved.get('corrector_steps', 0),
      'ode_heun': 2,
      'ode_rk4': 4,
      'dpm_solver': resolved.get('order', 1),
  }[name]
  return per_step * num_steps


def get_sampler(name: str, sde, shape, *, num_steps: int, eps: float = 1e-3,
                dtype=jnp.float32, **options):
  """`sample(key, score_fn) -> (x, nfe)` drawing x of `shape` (leading batch axis) by `name`.

  score_fn(x, t) takes x of `shape` and [shape[0]] times; close any conditioning over it. Options:
  pc takes predictor, corrector_steps, snr; dpm_solver takes order (see the module docstring).
  """
  resolved = _resolve(name, num_steps, options)
  _check_eps(eps, sde)
  if name == 'dpm_solver':
    _check_ve(sde)
  if name == 'pc':
    sde.corrector_alpha(jnp.zeros(()), num_steps)  # a VP SDE raises here if num_steps is too few
  shape = tuple(shape)
  nfe = sampler_nfe(name, num_steps, **options)
  run = {
      'euler_maruyama': _sample_euler_maruyama,
      'pc': _sample_pc,
      'ode_heun': functools.partial(_sample_ode, _heun_step),
      'ode_rk4': functools.partial(_sample_ode, _rk4_step),
      'dpm_solver': _sample_dpm,
  }[name]

  def sample(key: jax.Array, score_fn):
    return run(key, score_fn, sde, shape, dtype, num_steps, eps, **resolved), nfe

  return sample
