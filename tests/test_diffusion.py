"""The diffusion package: SDE marginals, the DSM loss and every sampler against known answers.

Statistical tolerances are about 4-5 standard errors of the Monte Carlo estimate plus the
discretisation error the method allows; all keys are fixed, so the checks are deterministic.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from mmer_jax.diffusion import losses
from mmer_jax.diffusion import sampling
from mmer_jax.diffusion import sde as sde_lib

VE = sde_lib.VESDE(sigma=25.0)
VP = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0)

# The 1-D target: 0.3 N(-2, 0.5^2) + 0.7 N(1.5, 0.3^2), drawn i.i.d. in every coordinate.
WEIGHTS = np.array([0.3, 0.7])
MEANS = np.array([-2.0, 1.5])
STDS = np.array([0.5, 0.3])
MIX_MEAN = float(WEIGHTS @ MEANS)  # 0.45
MIX_VAR = float(WEIGHTS @ (STDS**2 + MEANS**2) - MIX_MEAN**2)  # 2.7105
# 200 examples x 100 coordinates = 20000 draws: standard errors 0.0116 (mean), 0.0194 (variance).
SHAPE = (200, 100)
N_DRAWS = SHAPE[0] * SHAPE[1]


def _mix_fourth_central_moment() -> float:
  d = MEANS - MIX_MEAN
  return float(WEIGHTS @ (d**4 + 6 * d**2 * STDS**2 + 3 * STDS**4))


MEAN_SE = math.sqrt(MIX_VAR / N_DRAWS)
VAR_SE = math.sqrt((_mix_fourth_central_moment() - MIX_VAR**2) / N_DRAWS)
# 4 standard errors, plus a small allowance for the discretisation and the prior's mismatch.
MEAN_TOL = 4 * MEAN_SE + 0.005  # 0.051
VAR_TOL = 4 * VAR_SE + 0.02  # 0.098


def _kernel(sde, t, x):
  """The perturbation kernel's mean factor and std at [B] times t, broadcast against x."""
  a, std = sde.marginal_prob(jnp.ones_like(t), t)
  return sde_lib.batch_broadcast(a, x), sde_lib.batch_broadcast(std, x)


def mixture_score(sde):
  """The exact score of the mixture convolved with the SDE's kernel at time t."""
  weights, means, stds = (jnp.asarray(v, jnp.float32) for v in (WEIGHTS, MEANS, STDS))

  def score(x, t):
    a, std = _kernel(sde, t, x)
    a, std = a[..., None], std[..., None]
    var = jnp.square(a * stds) + jnp.square(std)
    d = x[..., None] - a * means
    logits = jnp.log(weights) - 0.5 * jnp.log(var) - 0.5 * jnp.square(d) / var
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * (-d / var), axis=-1)

  return score


def gaussian_score(sde, m, s):
  """The exact score of N(m, s^2) data under the SDE at time t."""

  def score(x, t):
    a, std = _kernel(sde, t, x)
    return -(x - a * m) / (jnp.square(a * s) + jnp.square(std))

  return score


def mixture_draws(key, shape):
  component_key, normal_key = jax.random.split(key)
  pick = jax.random.bernoulli(component_key, WEIGHTS[1], shape).astype(jnp.int32)
  return (jnp.asarray(MEANS, jnp.float32)[pick]
          + jnp.asarray(STDS, jnp.float32)[pick] * jax.random.normal(normal_key, shape))


def _moments(x):
  x = np.asarray(x, np.float64)
  return x.mean(), x.var()


# -- SDEs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('sde, num_steps, bias', [(VE, 100, 0.0), (VP, 1000, 0.005)])
def test_marginal_prob_matches_discretize_by_monte_carlo(sde, num_steps, bias):
  """The forward chain x_i = x_{i-1} + f + G z reproduces marginal_prob's mean and variance.

  VE's SMLD steps are exact in distribution; VP's DDPM steps are off by O(1/N) (at N = 1000 at
  most 0.002 in the mean factor and 0.0017 in the variance), hence `bias`. Statistical part: 5
  standard errors of 20000 draws.
  """
  n, x0 = 20000, 1.5
  key = jax.random.PRNGKey(0)

  def step(x, i):
    t = jnp.full((n,), (i + 1) / num_steps, jnp.float32)
    f, g = sde.discretize(x, t, num_steps)
    x = x + f + g * jax.random.normal(jax.random.fold_in(key, i), x.shape)
    return x, (jnp.mean(x), jnp.var(x))

  _, (means, variances) = jax.lax.scan(step, jnp.full((n,), x0), jnp.arange(num_steps))
  for fraction in (0.2, 0.5, 1.0):
    k = round(fraction * num_steps)
    mean, std = sde.marginal_prob(jnp.full((1,), x0), jnp.full((1,), fraction))
    mean, var = float(mean[0]), float(std[0])**2
    assert abs(float(means[k - 1]) - mean) < 5 * math.sqrt(var / n) + bias
    assert abs(float(variances[k - 1]) - var) < 5 * var * math.sqrt(2 / n) + bias


def test_ve_closed_forms():
  """std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma)), g(t) = sigma^t, d(std^2)/dt = g^2."""
  with jax.enable_x64(True):
    t = jnp.array([1e-3, 0.1, 0.5, 0.9, 1.0], jnp.float64)
    sigma = 25.0
    x = jnp.arange(10.0, dtype=jnp.float64).reshape(5, 2)
    mean, std = VE.marginal_prob(x, t)
    drift, g = VE.sde(x, t)
    np.testing.assert_allclose(std, np.sqrt((sigma**(2 * t) - 1) / 2 / np.log(sigma)), rtol=1e-12)
    np.testing.assert_allclose(g, sigma**t, rtol=1e-12)
    np.testing.assert_array_equal(mean, x)
    np.testing.assert_array_equal(drift, 0.0)
    h = 1e-6
    d_var = (VE.variance(t + h) - VE.variance(t - h)) / (2 * h)
    np.testing.assert_allclose(d_var, g**2, rtol=1e-7)
    np.testing.assert_allclose(VE.std_to_t(std), t, rtol=1e-12)
    prior = VE.prior_sampling(jax.random.PRNGKey(0), (4000, 8), jnp.float64)
    assert abs(float(jnp.std(prior)) / float(std[-1]) - 1) < 0.02  # 5 se of 32000 draws


def test_vp_reverse_probability_flow_halves_the_score_term():
  x = jnp.ones((3, 2))
  t = jnp.array([0.1, 0.5, 1.0])
  score_fn = lambda x, t: -x  # noqa: E731
  drift, g = VP.sde(x, t)
  rev_drift, rev_g = VP.reverse(score_fn).sde(x, t)
  ode_drift, ode_g = VP.reverse(score_fn, probability_flow=True).sde(x, t)
  np.testing.assert_allclose(rev_drift, drift + (g**2)[:, None] * x, rtol=1e-6)
  np.testing.assert_allclose(ode_drift, drift + 0.5 * (g**2)[:, None] * x, rtol=1e-6)
  np.testing.assert_array_equal(rev_g, g)
  np.testing.assert_array_equal(ode_g, 0.0)


# -- samplers on the mixture --------------------------------------------------------------------


@pytest.mark.parametrize('sde, name, num_steps, options', [
    (VE, 'euler_maruyama', 100, {}),
    (VE, 'euler_maruyama', 500, {}),
    (VE, 'pc', 100, {}),
    (VE, 'pc', 100, {'predictor': 'euler_maruyama'}),
    (VP, 'euler_maruyama', 100, {}),
])
def test_sde_samplers_recover_the_mixture(sde, name, num_steps, options):
  """From the SDE's own prior, the reverse SDE with the exact score gives the target's moments.

  The samplers return the noise-free mean of their last step, so no std(eps)^2 is added. The VE
  prior N(0, std(1)^2) omits the data's mean and variance, but the reverse SDE shrinks that error
  by (s^2 + std(eps)^2) / (s^2 + std(1)^2) (~0.03 here), well inside the tolerance.
  """
  sample = sampling.get_sampler(name, sde, SHAPE, num_steps=num_steps, **options)
  x, nfe = jax.jit(lambda key: sample(key, mixture_score(sde)))(jax.random.PRNGKey(0))
  assert int(nfe) == sampling.sampler_nfe(name, num_steps, **options)
  mean, var = _moments(x)
  assert abs(mean - MIX_MEAN) < MEAN_TOL
  assert abs(var - MIX_VAR) < VAR_TOL


ODE_SOLVERS = {
    'ode_heun': lambda f, s, x, n: sampling.ode_heun(f, s, x, n),
    'ode_rk4': lambda f, s, x, n: sampling.ode_rk4(f, s, x, n),
    'dpm_solver_2': lambda f, s, x, n: sampling.dpm_solver(f, s, x, n, order=2),
    'dpm_solver_1': lambda f, s, x, n: sampling.dpm_solver(f, s, x, n, order=1),
}


@pytest.fixture(scope='module')
def exact_prior_run():
  """x(1) drawn from the true VE marginal at t = 1 and a fine RK4 reference solution from it."""
  key_data, key_noise = jax.random.split(jax.random.PRNGKey(1))
  init = mixture_draws(key_data, SHAPE) + VE.marginal_std(jnp.ones(())) * jax.random.normal(
      key_noise, SHAPE)
  score = mixture_score(VE)
  reference = jax.jit(lambda x: sampling.ode_rk4(score, VE, x, 400))(init)
  return init, score, np.asarray(reference)


# (solver, steps for the moment check, step pair for the order check, least error ratio).
# Doubling the steps divides the error by about 2^order; the bounds leave room below 4 (2nd
# order) and 2 (1st order) for the pre-asymptotic regime.
@pytest.mark.parametrize('solver, num_steps, pair, ratio', [
    ('ode_heun', 50, (25, 50), 3.5),
    ('dpm_solver_2', 20, (20, 40), 3.5),
    ('dpm_solver_1', 200, (50, 100), 1.8),
])
def test_ode_solvers_recover_the_mixture_and_converge(exact_prior_run, solver, num_steps, pair,
                                                      ratio):
  """From the exact x(1), the probability-flow ODE gives the target convolved with std(eps)^2.

  Also the mean absolute error against a 400-step RK4 solution falls at the method's order.
  """
  init, score, reference = exact_prior_run
  solve = ODE_SOLVERS[solver]
  x = jax.jit(lambda x: solve(score, VE, x, num_steps))(init)
  mean, var = _moments(x)
  assert abs(mean - MIX_MEAN) < MEAN_TOL
  assert abs(var - MIX_VAR - float(VE.variance(jnp.asarray(1e-3)))) < VAR_TOL
  errors = [np.mean(np.abs(np.asarray(jax.jit(lambda x, n=n: solve(score, VE, x, n))(init))
                           - reference)) for n in pair]
  assert errors[0] / errors[1] > ratio, errors


def test_ode_rk4_matches_the_reference(exact_prior_run):
  """25 RK4 steps already agree with 400 to 1e-4 on average (4th order; float32 rounding)."""
  init, score, reference = exact_prior_run
  x = jax.jit(lambda x: sampling.ode_rk4(score, VE, x, 25))(init)
  assert np.mean(np.abs(np.asarray(x) - reference)) < 1e-4


# Per-draw error bounds: Heun and DPM-Solver-2 err as h^2, RK4 as h^4; about 2x margin each.
@pytest.mark.parametrize('sde, name, num_steps, options, tol', [
    (VE, 'ode_heun', 50, {}, 1e-2),
    (VE, 'ode_rk4', 25, {}, 1e-4),
    (VE, 'dpm_solver', 20, {}, 2e-2),
    (VP, 'ode_heun', 50, {}, 1e-2),
])
def test_named_ode_samplers_map_gaussian_data_exactly(sde, name, num_steps, options, tol):
  """For N(m, s^2) data the flow is affine: x(eps) = mu_eps + (x(1) - mu_1) sqrt(V_eps / V_1).

  Checked per draw (max abs error) from the sampler's own prior, so this also shows what the VE
  prior costs an ODE sampler: its mean is m (1 - sqrt(V_eps / V_1)), about 5% short of m = 2.
  """
  m, s, key = 2.0, 0.5, jax.random.PRNGKey(3)
  sample = sampling.get_sampler(name, sde, SHAPE, num_steps=num_steps, **options)
  x = jax.jit(lambda key: sample(key, gaussian_score(sde, m, s))[0])(key)
  (a1, v1), (ae, ve) = [(float(a[0]), float(a[0]**2 * s**2 + std[0]**2)) for a, std in
                        (sde.marginal_prob(jnp.ones(1), jnp.full((1,), t)) for t in (1.0, 1e-3))]
  init = np.asarray(sde.prior_sampling(key, SHAPE))
  expected = ae * m + (init - a1 * m) * math.sqrt(ve / v1)
  assert np.max(np.abs(np.asarray(x) - expected)) < tol


# -- the loss -----------------------------------------------------------------------------------


def test_exact_score_minimises_the_loss_and_matches_its_closed_form():
  """For N(m, s^2) data in d dims, the exact score's expected loss is d E_t[s^2 / (s^2 + std^2)].

  (The residual std score + z is (s^2 z - std u) / (s^2 + std^2) with u = x0 - m.) Checked to 4
  standard errors of the per-example losses; perturbed scores lose on the same t and z.
  """
  m, s, n, dim = 0.7, 0.5, 20000, 4
  data_key, loss_key = jax.random.split(jax.random.PRNGKey(0))
  x0 = m + s * jax.random.normal(data_key, (n, dim))
  t, z = losses.draw_perturbation(loss_key, x0, VE, eps=1e-5)
  exact = gaussian_score(VE, m, s)
  loss = np.asarray(losses.score_matching_loss_at(exact, x0, t, z, VE))
  grid = np.linspace(1e-5, 1.0, 100001)
  expected = dim * np.mean(s**2 / (s**2 + np.asarray(VE.variance(jnp.asarray(grid)))))
  assert abs(loss.mean() - expected) < 4 * loss.std() / math.sqrt(n)
  for other in (lambda x, t: 0.9 * exact(x, t), lambda x, t: 1.1 * exact(x, t),
                lambda x, t: exact(x, t) + 0.1 / _kernel(VE, t, x)[1]):
    assert np.mean(losses.score_matching_loss_at(other, x0, t, z, VE)) > loss.mean()
  keyed = losses.score_matching_loss(exact, x0, loss_key, VE, eps=1e-5)
  np.testing.assert_array_equal(keyed, loss)  # the keyed loss draws exactly this t and z
  assert keyed.shape == (n,)


def test_loss_gradients_with_respect_to_score_parameters():
  """check_grads (reverse mode, order 1, float64) of the loss through a linear score."""
  with jax.enable_x64(True):
    key = jax.random.PRNGKey(0)
    x0 = jax.random.normal(key, (3, 2, 4), jnp.float64)
    t, z = losses.draw_perturbation(jax.random.PRNGKey(1), x0, VE)
    weight = jax.random.normal(jax.random.PRNGKey(2), (4, 4), jnp.float64) * 0.1
    bias = jnp.linspace(-1.0, 1.0, 4, dtype=jnp.float64)

    def loss(weight, bias):
      score_fn = lambda x, t: (x @ weight + bias) * (1.0 + t)[:, None, None]  # noqa: E731
      return jnp.sum(losses.score_matching_loss_at(score_fn, x0, t, z, VE))

    check_grads(loss, (weight, bias), order=1, modes=['rev'])


# -- the authors' Euler-Maruyama loop -----------------------------------------------------------


def _reference_em(score_fn, init, noises, sigma, eps):
  """IMDer's Euler-Maruyama loop written out in numpy: returns the last step's mean."""
  time_steps = np.linspace(1.0, eps, len(noises))
  step_size = time_steps[0] - time_steps[1]
  x = init
  for time_step, noise in zip(time_steps, noises):
    batch_time = np.ones(x.shape[0]) * time_step
    g = sigma**batch_time
    mean_x = x + (g**2)[:, None, None] * score_fn(x, batch_time) * step_size
    x = mean_x + np.sqrt(step_size) * g[:, None, None] * noise
  return mean_x


def test_euler_maruyama_equals_the_authors_loop():
  sigma, eps, num_steps, shape = 25.0, 1e-3, 30, (3, 2, 5)
  rng = np.random.default_rng(0)
  std1 = np.sqrt((sigma**2 - 1) / 2 / np.log(sigma))
  init = rng.standard_normal(shape) * std1
  noises = rng.standard_normal((num_steps,) + shape)

  def score(x, t, xp):
    std = xp.sqrt((sigma**(2 * t) - 1) / 2 / np.log(sigma))[:, None, None]
    return -x / (1.0 + std**2) + 0.1 * xp.sin(x) / std

  expected = _reference_em(lambda x, t: score(x, t, np), init, noises, sigma, eps)
  with jax.enable_x64(True):
    got = sampling.euler_maruyama(lambda x, t: score(x, t, jnp), sde_lib.VESDE(sigma),
                                  jnp.asarray(init), jnp.asarray(noises), eps)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


def test_keyed_euler_maruyama_uses_the_documented_noise():
  """get_sampler's EM: init from prior(split(key)[0]), step i's noise from fold_in(split[1], i)."""
  shape, num_steps, key, f64 = (4, 3), 10, jax.random.PRNGKey(5), jnp.float64
  with jax.enable_x64(True):
    score = lambda x, t: -x / (1.0 + VE.variance(t)[:, None])  # noqa: E731
    sample = sampling.get_sampler('euler_maruyama', VE, shape, num_steps=num_steps, dtype=f64)
    x, _ = sample(key, score)
    init_key, noise_key = jax.random.split(key)
    noises = jnp.stack([jax.random.normal(jax.random.fold_in(noise_key, i), shape, f64)
                        for i in range(num_steps)])
    expected = sampling.euler_maruyama(score, VE, VE.prior_sampling(init_key, shape, f64), noises)
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-12)


# -- compilation, NFE and determinism -----------------------------------------------------------

NAMED = [('euler_maruyama', {}), ('pc', {'corrector_steps': 2}), ('ode_heun', {}),
         ('ode_rk4', {}), ('dpm_solver', {'order': 1}), ('dpm_solver', {})]


@pytest.mark.parametrize('name, options', NAMED)
def test_sampler_is_one_scan_compiled_once_and_deterministic(name, options):
  shape, score = (8, 3), mixture_score(VE)
  sizes = []
  for num_steps in (5, 40):
    sample = sampling.get_sampler(name, VE, shape, num_steps=num_steps, **options)
    jaxpr = jax.make_jaxpr(lambda key: sample(key, score)[0])(jax.random.PRNGKey(0)).jaxpr
    primitives = [eqn.primitive.name for eqn in jaxpr.eqns]
    assert primitives.count('scan') == 1, primitives
    sizes.append(len(jaxpr.eqns))
  assert sizes[0] == sizes[1]

  traces = []

  def draw(key):
    traces.append(None)
    return sample(key, score)[0]

  draw = jax.jit(draw)
  a, b, c = draw(jax.random.PRNGKey(0)), draw(jax.random.PRNGKey(0)), draw(jax.random.PRNGKey(1))
  assert len(traces) == 1
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


@pytest.mark.parametrize('name, options', NAMED)
def test_nfe_counts_score_evaluations(name, options):
  """The returned NFE (= sampler_nfe) equals the score calls a run makes, counted at run time."""
  calls = []
  base = mixture_score(VE)

  def counted(x, t):
    jax.debug.callback(lambda: calls.append(None))
    return base(x, t)

  num_steps = 3
  x, nfe = sampling.get_sampler(name, VE, (2, 2), num_steps=num_steps, **options)(
      jax.random.PRNGKey(0), counted)
  jax.block_until_ready(x)
  jax.effects_barrier()
  assert len(calls) == nfe == sampling.sampler_nfe(name, num_steps, **options)
  expected = {'euler_maruyama': 3, 'pc': 9, 'ode_heun': 6, 'ode_rk4': 12}.get(
      name, 3 * options.get('order', 2))
  assert nfe == expected


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
  with pytest.raises(ValueError, match='unknown sampler .*euler_maruyama'):
    sampling.get_sampler('ddim', VE, (2, 3), num_steps=10)
  with pytest.raises(ValueError, match='VE probability-flow ODE only'):
    sampling.get_sampler('dpm_solver', VP, (2, 3), num_steps=10)
  with pytest.raises(ValueError, match='VE probability-flow ODE only'):
    sampling.dpm_solver(lambda x, t: x, VP, jnp.zeros((2, 3)), 10)
  for name in sampling.SAMPLERS:
    with pytest.raises(ValueError, match='num_steps must be >='):
      sampling.get_sampler(name, VE, (2, 3), num_steps=0)
    with pytest.raises(ValueError, match='num_steps must be >='):
      sampling.sampler_nfe(name, -1)
  with pytest.raises(ValueError, match='num_steps must be >= 2'):
    sampling.get_sampler('euler_maruyama', VE, (2, 3), num_steps=1)
  with pytest.raises(ValueError, match='num_steps must be a Python int'):
    sampling.get_sampler('ode_heun', VE, (2, 3), num_steps=10.0)
  with pytest.raises(ValueError, match='takes options'):
    sampling.get_sampler('ode_heun', VE, (2, 3), num_steps=10, snr=0.1)
  with pytest.raises(ValueError, match='predictor'):
    sampling.get_sampler('pc', VE, (2, 3), num_steps=10, predictor='ancestral')
  with pytest.raises(ValueError, match='order'):
    sampling.get_sampler('dpm_solver', VE, (2, 3), num_steps=10, order=3)
  with pytest.raises(ValueError, match='eps'):
    sampling.get_sampler('ode_heun', VE, (2, 3), num_steps=10, eps=0.0)
  with pytest.raises(ValueError, match='num_steps > beta_max'):
    sampling.get_sampler('pc', VP, (2, 3), num_steps=10)
  with pytest.raises(ValueError, match='noises must be'):
    sampling.euler_maruyama(lambda x, t: x, VE, jnp.zeros((2, 3)), jnp.zeros((5, 2, 4)))


def test_condition_noise_is_a_function_of_key_and_time():
  from mmer_jax.diffusion import conditioning  # pylint: disable=g-import-not-at-top
  key = jax.random.PRNGKey(0)
  a = conditioning.condition_noise(key, jnp.full((2,), 0.5), (2, 3))
  np.testing.assert_array_equal(a, conditioning.condition_noise(key, jnp.full((2,), 0.5), (2, 3)))
  assert not np.allclose(a, conditioning.condition_noise(key, jnp.full((2,), 0.4), (2, 3)))
  assert not np.allclose(a, conditioning.condition_noise(jax.random.PRNGKey(1), jnp.full((2,), 0.5),
                                                         (2, 3)))


def test_perturbed_condition_score_feeds_the_noised_condition():
  from mmer_jax.diffusion import conditioning  # pylint: disable=g-import-not-at-top
  sde = sde_lib.VESDE(sigma=25.0)
  key = jax.random.PRNGKey(3)
  condition = jnp.arange(6.0).reshape(2, 3)
  seen = {}

  def network(x, t, c):
    seen['c'] = c
    return x * 0 + t[:, None]

  score_fn = conditioning.perturbed_condition_score(network, condition, key, sde)
  t = jnp.full((2,), 0.3)
  score_fn(jnp.zeros((2, 3)), t)
  expected = condition + sde.marginal_std(t)[:, None] * conditioning.condition_noise(key, t, (2, 3))
  np.testing.assert_allclose(seen['c'], expected, rtol=1e-6)
