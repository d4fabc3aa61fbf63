"""`--mode=gradcheck`: the full training loss of a configured method against finite differences.

In float64 on a small training batch (with the training-time modality dropout drawn from a fixed
key and dropout masks fixed by the key), at the initial parameters plus a little Gaussian jitter
(`config.gradcheck.jitter`, so no ReLU sits exactly on its kink), for each parameter group `jax.test_util.check_grads`
checks forward and reverse mode against central differences, and the report gives the relative
error of the directional derivative along a random direction in that group.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import test_util as jtu

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
    keys = [getattr(k, 'key', getattr(k, 'idx', k)) for k in path]
    groups.setdefault('/'.join(str(k) for k in keys[:2]), []).append(path)
  return groups


def _set(params, paths, values):
  leaves = dict(zip(paths, values))
  return jax.tree_util.tree_map_with_path(lambda p, x: leaves.get(p, x), params)


def run(config: ml_collections.ConfigDict, *, seed: int = 0) -> dict:
  """Returns {'ok': bool, 'groups': {name: {'rel_error', 'ok', 'size'}}}."""
  jax.config.update('jax_enable_x64', True)
  try:
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.data.batch_size = cfg.data.eval_batch_size = cfg.gradcheck.batch_size
    cfg.data.prefetch = 0
    cfg.parallel = 'jit'
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
    batch['modality_mask'] = steps.training_modality_mask(
        mask_rng, jnp.asarray(batch['modality_mask']), missing_mode=run_.method.train_missing,
        rate=cfg.train.missing_rate, available=run_.spec.available)
    count = max(float(np.asarray(batch['example_mask']).sum()), 1.0)

    def loss(p):
      return steps.weighted_loss(run_.method, p, batch, loss_rng, count)[0]

    eps, atol, rtol = cfg.gradcheck.eps, cfg.gradcheck.atol, cfg.gradcheck.rtol
    report = {'ok': True, 'groups': {}}
    for name, paths in _groups(params).items():
      flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
      values = [jnp.asarray(flat[p]) for p in paths]

      def group_loss(*vals, paths=paths):
        return loss(_set(params, paths, vals))

      key = jax.random.fold_in(rng, hash(name) % (2 ** 31))
      direction = [jax.random.normal(k, v.shape, v.dtype)
                   for k, v in zip(jax.random.split(key, len(values)), values)]
      norm = jnp.sqrt(sum(jnp.sum(d * d) for d in direction))
      direction = [d / norm for d in direction]
      plus = group_loss(*[v + eps * d for v, d in zip(values, direction)])
      minus = group_loss(*[v - eps * d for v, d in zip(values, direction)])
      numeric = (plus - minus) / (2 * eps)
      _, fwd = jax.jvp(group_loss, tuple(values), tuple(direction))
      grads = jax.grad(group_loss, argnums=tuple(range(len(values))))(*values)
      rev = sum(jnp.vdot(g, d) for g, d in zip(grads, direction))
      scale = max(abs(float(numeric)), abs(float(fwd)), 1e-8)
      rel = max(abs(float(fwd - numeric)), abs(float(rev - numeric))) / scale
      ok = True
      size = sum(np.size(v) for v in values)
      try:
        # check_grads steps along an unnormalised Gaussian tangent (norm ~ sqrt(size)); scale its
        # step so the perturbation has the same norm `eps` as ours and stays off ReLU/max kinks.
        jtu.check_grads(group_loss, tuple(values), order=1, modes=('fwd', 'rev'),
                        eps=eps / np.sqrt(size), atol=atol, rtol=rtol)
      except AssertionError:
        ok = False
      report['groups'][name] = {'rel_error': rel, 'ok': ok,
                                'size': int(size)}
      report['ok'] &= ok
    return report
  finally:
    jax.config.update('jax_enable_x64', False)


def format_report(report: dict) -> str:
  lines = [f"{'group':48s} {'size':>9s} {'max rel err':>12s}  ok"]
  for name, r in report['groups'].items():
    lines.append(f"{name:48s} {r['size']:9d} {r['rel_error']:12.3e}  {'yes' if r['ok'] else 'NO'}")
  lines.append('gradcheck ' + ('passed' if report['ok'] else 'FAILED'))
  return '\n'.join(lines)
