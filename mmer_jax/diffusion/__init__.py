"""Score-based diffusion, model-agnostic: SDEs, the denoising score-matching loss and samplers.

One file, one job (after score_sde):

* `sde`: `VESDE` (IMDer's dx = sigma^t dw) and `VPSDE` behind one interface: `sde(x, t)`,
  `marginal_prob(x, t)`, `prior_sampling(key, shape)`, `discretize(x, t, num_steps)` and
  `reverse(score_fn, probability_flow)`, the reverse-time SDE or ODE the samplers integrate.
* `losses`: the per-example DSM loss ||std score(x_t, t) + z||^2, returned unreduced so the caller
  can mask examples; `score_matching_loss_at` takes fixed (t, z).
* `sampling`: `get_sampler(name, sde, shape, num_steps=...)` -> `sample(key, score_fn) -> (x, nfe)`
  for euler_maruyama, pc, ode_heun, ode_rk4 and dpm_solver (VE only), each a single `lax.scan`.

Everything takes a plain `score_fn(x, t)` with x's leading axis the batch and t one time per
example; a conditional network is used by closing its condition over that function.

The stochastic samplers return the mean of their last step rather than the noisy state: at
t = eps the noise that step would add is below the data's scale and only blurs the sample
(IMDer's Euler-Maruyama sampler and score_sde's `denoise=True` both do this).

NFE, the number of score evaluations, is the cost that matters (the score network dominates):
N for Euler-Maruyama, N (1 + corrector_steps) for pc, 2N for Heun, 4N for RK4 and N or 2N for
DPM-Solver of order 1 or 2; `sampling.sampler_nfe` gives it without running.

Precision: everything here runs in the dtype of the state it is given (the sample, the
condition, the times). Under mixed precision (`config.precision='bfloat16'`) keep that float32:
only the score network computes in bfloat16, and it returns float32 scores (IMDer's
`score_net.ScoreNet` does), so the SDE coefficients, the integrators' accumulations and the
score-matching residual std * score + z (a cancellation) stay float32.
"""
