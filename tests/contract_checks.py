"""The method contract, checked for one registered method and variant (run by test_method_contract).

Run as a program under 8 host CPU devices, it prints one JSON line per case:

  python tests/contract_checks.py CASE...      (CASE = method or method:variant)

Each case builds the method's registered example config (`methods.example_config`) on a tiny
toy feature directory with small dims and no dropout (so padding and determinism are exact),
resolves its main stage, and measures what the contract asks; the test module asserts on it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'tests')]

import importlib  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from mmer_jax import methods  # noqa: E402
from mmer_jax import stages  # noqa: E402
from mmer_jax import steps  # noqa: E402
from mmer_jax import train  # noqa: E402
import toy_data  # noqa: E402

SMALL = {'embed_dim': 8, 'num_filters': 4, 'hidden': (8,), 'num_blocks': 2, 'utterance_dim': 8,
         'lstm_hidden': 8, 'dense_dim': 8,
         # IMDer: two-level score U-Nets with one attention layer, one RCAB, width 8.
         'd_model': 8, 'score_channels': (8, 16), 'score_attn_layers': 1, 'time_embed_dim': 8,
         'refine_blocks': 1}
SMALL_LAYERS = {'cra': (16, 8, 4), 'ae': (16, 12)}
PAD_ROWS = 3


def cases() -> list[str]:
  """Every registered method, and every variant it declares (`Method.variants`)."""
  out = []
  for name in methods.NAMES:
    variants = methods.get_method_class(name).variants
    out += [f'{name}:{v}' for v in variants] if variants else [name]
  return out


def _shrink(node: ml_collections.ConfigDict, path: str = '') -> None:
  """Small dims and zero dropout everywhere in a method config."""
  for key in list(node):
    value = node[key]
    if isinstance(value, ml_collections.ConfigDict):
      _shrink(value, key)
    elif 'dropout' in key:  # also IMDer's attn_dropout_a, embed_dropout, ...
      node[key] = 0.0
    elif key == 'layers' and path in SMALL_LAYERS:
      node[key] = SMALL_LAYERS[path]
    elif key in SMALL:
      node[key] = type(value)(SMALL[key]) if not isinstance(value, tuple) else SMALL[key]


def case_config(case: str, tmp: str) -> ml_collections.ConfigDict:
  name, _, variant = case.partition(':')
  module = importlib.import_module(f'configs.{methods.example_config(name)}')
  config = module.get_config('smoke')
  config.method.name = name
  if variant:
    config.method.variant = variant
  _shrink(config.method)
  dialogue = methods.get_method_class(name).level == 'dialogue'
  toy = toy_data.write_features_dir(os.path.join(tmp, 'toy_dialogue' if dialogue else 'toy'), n=96,
                                    classes=4, dialogues=dialogue)
  config.data.features_dir = str(toy)
  config.data.data_dir = os.path.join(tmp, 'data')
  config.data.options = ml_collections.ConfigDict()
  config.data.batch_size = config.data.eval_batch_size = 8
  config.data.prefetch = 0
  # One step is compared across one device, jit and pmap: plain SGD, because Adam's first step
  # is +-lr wherever a gradient is zero up to rounding (a conv bias in front of a GroupNorm, as in
  # IMDer's score U-Nets), which turns float noise into lr-sized parameter differences.
  config.optimizer.name = 'sgd'
  config.optimizer.b1 = 0.0
  return stages.main_stage(config)


def _pad(batch: dict, rows: int, seed: int, host_batch=None) -> dict:
  """`batch` with `rows` padding rows appended: garbage features, masks False, index -1; a graph
  method's graph is built afresh for the padded batch by its `host_batch`."""
  gen = np.random.default_rng(seed)

  def pad(key, x):
    x = np.asarray(x)
    extra = np.zeros((rows,) + x.shape[1:], x.dtype)
    if key in ('index',):
      extra[:] = -1
    elif x.dtype == bool:
      extra[:] = key == 'modality_mask'
    elif np.issubdtype(x.dtype, np.floating):
      extra = (50.0 * gen.standard_normal(extra.shape)).astype(x.dtype)
    elif key.startswith('lengths/'):
      extra[:] = 1
    return np.concatenate([x, extra])

  out = {}
  for key, value in batch.items():
    if key == 'graph':
      continue
    if isinstance(value, dict):
      out[key] = {k: pad(f'{key}/{k}', v) for k, v in value.items()}
    else:
      out[key] = pad(key, value)
  return host_batch(out) if 'graph' in batch else out


def _max_diff(a, b) -> float:
  return max([float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
              for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))] + [0.0])


def check(case: str, tmp: str) -> dict:
  config = case_config(case, tmp)
  devices = jax.devices()
  run = train.Run(config, devices=devices[:1])
  method = run.method
  batch = next(iter(run.train_batches(0)))
  params = run.init_params()
  rng = jax.random.PRNGKey(1)
  report: dict = {'case': case, 'method': config.method.name, 'example_mask_shape':
                  list(np.shape(batch['example_mask']))}

  loss_fn = jax.jit(method.loss)
  per, aux = loss_fn(params, batch, rng)
  report['loss_shape'] = list(np.shape(per))
  report['aux_shapes'] = {k: list(np.shape(v)) for k, v in aux.items()}
  valid = np.asarray(batch['example_mask'])
  report['loss_finite'] = bool(np.isfinite(np.asarray(per)[valid]).all())

  # Padding rows change nothing: the real rows' losses and predictions, the weighted loss.
  padded = _pad(batch, PAD_ROWS, seed=2, host_batch=method.host_batch)
  per_padded, _ = jax.jit(method.loss)(params, padded, rng)
  n = len(valid)
  report['padding_loss_diff'] = _max_diff(np.asarray(per)[valid], np.asarray(per_padded)[:n][valid])
  count = max(float(valid.sum()), 1.0)
  total = steps.weighted_loss(method.loss, params, batch, rng, count)[0]
  total_padded = steps.weighted_loss(method.loss, params, padded, rng, count)[0]
  report['padding_total_diff'] = abs(float(total) - float(total_padded))

  predict = jax.jit(method.predict)
  out = np.asarray(predict(params, batch, rng))
  again = np.asarray(predict(params, batch, rng))
  out_padded = np.asarray(jax.jit(method.predict)(params, padded, rng))
  lead = list(np.shape(batch['example_mask']))
  report['predict_shape'] = list(out.shape)
  report['predict_expected_shape'] = lead + ([run.spec.num_classes] if run.spec.task == 'classification' else [])
  report['predict_repeat_diff'] = _max_diff(out, again)
  report['predict_padding_diff'] = _max_diff(out[valid], out_padded[:n][valid])

  # Trainable mask: the parameter tree's structure; frozen leaves do not move in a step.
  mask = method.trainable_mask(params)
  report['mask_matches_tree'] = (jax.tree_util.tree_structure(mask, is_leaf=lambda x: isinstance(x, bool))
                                 == jax.tree_util.tree_structure(params))
  flags = jax.tree_util.tree_leaves(mask)
  report['num_frozen_leaves'] = int(sum(not f for f in flags))
  report['mask_all_bool'] = all(isinstance(f, bool) for f in flags)

  def grad_of(p):
    trainable, frozen, structure = steps.partition(p, mask)
    return jax.grad(lambda t: steps.weighted_loss(method.loss, steps.combine(t, frozen, structure),
                                                  batch, rng, count)[0])(trainable)

  grads = jax.jit(grad_of)(params)
  report['grads_finite'] = all(bool(np.isfinite(np.asarray(g)).all()) for g in grads)
  report['grads_nonzero'] = any(bool(np.any(np.asarray(g))) for g in grads)

  state = run.init_state(params)
  before = jax.device_get(state.params)
  new_state, metrics = run.train_step(run.to_devices(state), run.place(batch))
  after = jax.device_get(run.from_devices(new_state).params)
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                      jax.tree_util.tree_leaves(after))]
  report['frozen_moved'] = int(sum(m for m, f in zip(moved, flags) if not f))
  report['trainable_moved'] = int(sum(m for m, f in zip(moved, flags) if f))
  report['step_loss_finite'] = bool(np.isfinite(float(metrics['loss'])))

  # jit over 8 devices equals pmap over 8 devices (and one device): one step from the same state.
  results = {'single': (jax.device_get(metrics), after)}
  for parallel in ('jit', 'pmap'):
    with config.unlocked():
      config.parallel = parallel
    run_p = train.Run(config, devices=devices, dataset=run.dataset)
    batch_p = next(iter(run_p.train_batches(0)))  # the same rows (a graph is split per device)
    s, m = run_p.train_step(run_p.to_devices(run_p.init_state(params)), run_p.place(batch_p))
    m = jax.device_get(m)
    if run_p.is_pmap:
      m = jax.tree_util.tree_map(lambda x: x[0], m)
    results[parallel] = (m, jax.device_get(run_p.from_devices(s).params))
    pred = run_p.predict(run_p.device_params(params), batch_p)
    report[f'{parallel}_predict_diff'] = _max_diff(out, pred)
  report['jit_vs_pmap_loss_diff'] = abs(float(results['jit'][0]['loss']) - float(results['pmap'][0]['loss']))
  report['jit_vs_pmap_params_diff'] = _max_diff(results['jit'][1], results['pmap'][1])
  report['single_vs_jit_params_diff'] = _max_diff(results['single'][1], results['jit'][1])
  report['devices'] = len(devices)
  return report


def main(argv):
  tmp = tempfile.mkdtemp(prefix='contract_')
  for case in argv[1:] or cases():
    start = time.perf_counter()
    try:
      report = check(case, tmp)
    except Exception:  # pylint: disable=broad-except
      report = {'case': case, 'error': traceback.format_exc()}
    report['seconds'] = round(time.perf_counter() - start, 1)  # to size the default run
    print('CONTRACT ' + json.dumps(report), flush=True)


if __name__ == '__main__':
  main(sys.argv)
