"""Score-based diffusion, model-agnostic: SDEs, the denoising score-matching loss and samplers.

One file, one job (after score_sde): `sde` (`VESDE`, IMDer's, and `VPSDE` behind one interface),
`losses` (the per-example DSM loss, unreduced so the caller can mask examples), `conditioning`
(IMDer's diffused condition) and `sampling` (`get_sampler(name, sde, shape, num_steps=...)` ->
`sample(key, score_fn) -> (x, nfe)`, each sampler a single `lax.scan`).

Everything takes a plain `score_fn(x, t)` with x's leading axis the batch and t one time per
example; a conditional network is used by closing its condition over that function. Everything
runs in the dtype of the state it is given: keep that float32 under mixed precision.

The interface, the samplers, their NFE and the precision rule:
docs/imder.md#the-diffusion-package-mmer_jaxdiffusion.
"""
