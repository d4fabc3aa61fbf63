"""`--mode=gradcheck`: the full training loss of a configured method against finite differences.

In float64 on a small training batch (the training-time modality dropout and the dropout masks are
fixed by a key), at the initial parameters plus a little Gaussian jitter (`config.gradcheck.jitter`,
so no ReLU or max-pool sits exactly on its kink): for each parameter group (the first two levels of
the parameter tree), the derivative along a random unit direction in that group by central
differences, forward mode and reverse mode; the report gives their max relative error. Then
`jax.test_util.check_grads` (fwd and rev) over all parameters at once. Every function is compiled
once, so this takes seconds, not minutes, on the LSTM models.

The check always runs in float64: `config.precision` (mixed precision) is ignored, i.e. set to
'float32' so the models compute in the promotion of their float64 inputs and parameters; a
bfloat16 setting is logged and named in the report (`precision_ignored`).
"""

from __future__ import annotations

import functools
import zlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import test_util as jtu

from mmer_jax import stages
from mmer_jax import steps
from mmer_jax import train


def _to64(tree):
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x, np.float64) if np.issubdtype(np.asarray(x).dtype, np.floating) else x, tree)


def _groups(params) -> dict[str, tuple]:
  """Parameter groups: the first two levels of the parameter tree (e.g. params/encoder_audio)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  groups: dict[str, list] = {}
  for path, _ in flat:
    groups.setdefault(jax.tree_util.keystr(path[:2], simple=True, separator='/'), []).append(path)
  return groups


def run(config: ml_collections.ConfigDict, *, seed: int = 0) -> dict:
  """Returns {'ok': bool, 'groups': {name: {'rel_error', 'ok', 'size'}}, 'dtype': the loss's dtype
  (float64), and 'precision_ignored' when config.precision asked for another}."""
  jax.config.update('jax_enable_x64', True)
  try:
    cfg = stages.main_stage(config)  # the loss of the main stage, near its initialisation
    ignored = cfg.get('precision', 'float32')
    with cfg.unlocked():
      cfg.data.batch_size = cfg.data.eval_batch_size = cfg.gradcheck.batch_size
      cfg.data.prefetch = 0
      cfg.parallel = 'jit'
      cfg.precision = 'float32'  # the models promote to the float64 inputs and parameters
    if ignored != 'float32':
      logging.warning('gradcheck: config.precision=%r is ignored; the check runs in float64', ignored)
    run_ = train.Run(cfg, devices=jax.devices()[:1])
    batch = _to64(next(iter(run_.streams.epoch('train', 0, train=True))))
    rng = jax.random.PRNGKey(seed)
    params = _to64(run_.method.init(rng, batch))
    # A generic point near the initialisation: with zero biases, zero-filled (missing) inputs put
    # ReLUs exactly at 0 and max-pools on exact ties, where finite differences see a kink.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    noise_keys = jax.random.split(jax.random.fold_in(rng, 2), len(leaves))
    params = jax.tree_util.tree_unflatten(treedef, [
        x + cfg.gradcheck.jitter * np.asarray(jax.random.normal(k, np.shape(x), jnp.float64))
        if np.issubdtype(np.asarray(x).dtype, np.floating) else x for k, x in zip(noise_keys, leaves)])
    mask_rng, loss_rng = jax.random.split(jax.random.fold_in(rng, 1))
    batch['modality_mask'] = steps.batch_training_mask(
        mask_rng, {**batch, 'modality_mask': jnp.asarray(batch['modality_mask'])},
        missing_mode=cfg.train.missing, rate=steps.training_rate(cfg), available=run_.spec.available)
    count = max(float(np.asarray(batch['example_mask']).sum()), 1.0)

    # Stop-gradient targets (frozen teachers, cycle targets) are computed at the checked point
    # `params`: that is the function whose derivative jax.grad of the training loss is.
    loss_fn = functools.partial(run_.method.gradcheck_loss, target_params=params)

    @jax.jit
    def loss(p):
      return steps.weighted_loss(loss_fn, p, batch, loss_rng, count)[0]

    eps, atol, rtol = cfg.gradcheck.eps, cfg.gradcheck.atol, cfg.gradcheck.rtol
    jvp = jax.jit(lambda p, v: jax.jvp(loss, (p,), (v,))[1])
    grad = jax.jit(jax.grad(loss))
    gradient = grad(params)
    report = {'ok': True, 'groups': {}, 'dtype': str(jnp.asarray(loss(params)).dtype)}
    if ignored != 'float32':
      report['precision_ignored'] = ignored
    for name, paths in _groups(params).items():
      # A unit direction inside this group (zero elsewhere): central difference vs jvp vs vjp.
      key = jax.random.fold_in(rng, zlib.crc32(name.encode()))
      chosen = set(paths)
      direction = jax.tree_util.tree_map_with_path(
          lambda path, x: (jax.random.normal(jax.random.fold_in(key, zlib.crc32(str(path).encode())),
                                             np.shape(x), jnp.float64)
                           if path in chosen else jnp.zeros(np.shape(x), jnp.float64)), params)
      norm = optax.global_norm(direction)
      direction = jax.tree_util.tree_map(lambda d: d / norm, direction)
      shifted = lambda sign: jax.tree_util.tree_map(lambda p, d: p + sign * eps * d, params, direction)
      numeric = float((loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * eps))
      fwd = float(jvp(params, direction))
      rev = float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(gradient),
                                                      jax.tree_util.tree_leaves(direction))))
      scale = max(abs(numeric), abs(fwd), atol)
      rel = max(abs(fwd - numeric), abs(rev - numeric)) / scale
      ok = rel <= rtol
      report['groups'][name] = {'rel_error': rel, 'ok': ok,
                                'size': int(sum(np.size(flat) for p, flat in
                                                jax.tree_util.tree_flatten_with_path(params)[0]
                                                if p in chosen))}
      report['ok'] &= ok
    # And JAX's own check over all parameters at once (fwd and rev), with its step scaled like ours
    # (check_grads' Gaussian tangent has norm ~ sqrt(size)).
    size = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
    try:
      jtu.check_grads(loss, (params,), order=1, modes=('fwd', 'rev'), eps=eps / np.sqrt(size),
                      atol=atol, rtol=rtol)
      report['check_grads'] = True
    except AssertionError:
      report['check_grads'] = False
      report['ok'] = False
    return report
  finally:
    jax.config.update('jax_enable_x64', False)


def format_report(report: dict) -> str:
  lines = [f"{'group':48s} {'size':>9s} {'max rel err':>12s}  ok"]
  for name, r in report['groups'].items():
    lines.append(f"{name:48s} {r['size']:9d} {r['rel_error']:12.3e}  {'yes' if r['ok'] else 'NO'}")
  lines.append(f"jax.test_util.check_grads (fwd, rev) on all parameters: "
               f"{'passed' if report.get('check_grads') else 'FAILED'}")
  if report.get('precision_ignored'):
    lines.append(f"config.precision={report['precision_ignored']} ignored: checked in "
                 f"{report.get('dtype', 'float64')}")
  lines.append('gradcheck ' + ('passed' if report['ok'] else 'FAILED'))
  return '\n'.join(lines)
