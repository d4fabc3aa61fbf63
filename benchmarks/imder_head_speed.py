"""IMDer's fusion head before and after a change, side by side in ONE process (medians).

  python benchmarks/imder_head_speed.py --baseline=e024f1b --out=docs/results/imder_head_speed
  python benchmarks/imder_head_speed.py --baseline=e024f1b --dataset=mosei --batch=128 --step

The baseline is `mmer_jax/models/imder_head.py` as it was at the git revision `--baseline`
(`git show`, imported as a module of its own); the current one is the working tree's. Both run
on the same parameters (the two must build the same parameter tree) and inputs, and their
compiled functions are called in turn (baseline, current, baseline, ...), so a machine whose
load changes slows both alike. Timed, each `--steps` calls after one untimed call:

  head_train   the head's forward and backward as training runs it (dropout on, L1 loss on
               random labels, gradients w.r.t. the head's parameters), projected inputs
               [B, L, 32] for the three modalities (L = 48, the MOSI / MOSEI aligned length)
  head_infer   the head's forward alone, deterministic
  step         with --step: the whole complete-data train step of configs/imder_<dataset>.py:
               synthetic (`train.missing=none`, `method.recovery=zeros` unless --missing /
               --recovery say otherwise), one `train.Run` with the baseline head (the module
               `models/imder.py` builds it from is swapped while that run traces) and one with
               the current head

For each: the median, min and max seconds, XLA's FLOP count of the lowered computation
(`benchmark.cost_flops`), the achieved GFLOP/s (FLOPs / median) and the ratio baseline / current.
The outputs and gradients of the two heads are compared (deterministic, max relative
difference). Writes `<out>.json`; prints the JSON.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402  pylint: disable=wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

from mmer_jax import benchmark as benchmark_lib  # noqa: E402  pylint: disable=wrong-import-position
from mmer_jax.models import imder_head  # noqa: E402  pylint: disable=wrong-import-position

NLEVELS = {'mosi': 4, 'mosei': 6}
# The authors' dropout rates per dataset (configs/imder_<dataset>.py).
DROPOUTS = {'mosi': dict(attn_dropout_a=0.2, embed_dropout=0.2),
            'mosei': dict(attn_dropout_a=0.0, embed_dropout=0.0)}


def load_baseline(rev: str):
  """`mmer_jax/models/imder_head.py` at git revision `rev`, as the module `imder_head_baseline`."""
  source = subprocess.run(['git', 'show', f'{rev}:mmer_jax/models/imder_head.py'], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout
  path = pathlib.Path(tempfile.mkdtemp()) / 'imder_head_baseline.py'
  path.write_text(source, encoding='utf-8')
  spec = importlib.util.spec_from_file_location('imder_head_baseline', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules['imder_head_baseline'] = module  # flax's dataclasses look their module up
  spec.loader.exec_module(module)
  return module


def interleaved(fns: dict, steps: int) -> dict:
  """{name: {median, min, max}} of `steps` calls of each fn (called in turn), after one untimed
  call each; every call blocked until ready."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: {'median': statistics.median(t), 'min': min(t), 'max': max(t), 'steps': steps}
          for name, t in times.items()}


def rel_diff(a, b) -> float:
  leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-30)) for x, y in leaves)


def add_rates(timings: dict, flops: dict) -> dict:
  for name, t in timings.items():
    f = flops.get(name)
    t['gflop'] = None if f is None else f / 1e9
    t['gflops_per_s'] = None if f is None else f / t['median'] / 1e9
  return timings


def head_case(baseline, dataset: str, batch: int, length: int, steps: int) -> dict:
  rng = np.random.default_rng(0)
  projected = {m: jnp.asarray(rng.normal(size=(batch, length, 32)), jnp.float32)
               for m in ('text', 'audio', 'visual')}
  labels = jnp.asarray(rng.normal(size=(batch, 1)), jnp.float32)
  kwargs = dict(nlevels=NLEVELS[dataset], **DROPOUTS[dataset])
  heads = {'baseline': baseline.IMDerFusionHead(**kwargs),
           'current': imder_head.IMDerFusionHead(**kwargs)}
  params = heads['current'].init(jax.random.PRNGKey(0), projected, deterministic=True)
  baseline_params = heads['baseline'].init(jax.random.PRNGKey(0), projected, deterministic=True)
  if jax.tree.structure(params) != jax.tree.structure(baseline_params):
    raise SystemExit('the baseline head builds another parameter tree')
  key = jax.random.PRNGKey(1)
  train, infer, flops = {}, {}, {}
  for name, head in heads.items():
    def loss(p, x, k, head=head, deterministic=False):
      out = head.apply(p, x, deterministic=deterministic, rngs={'dropout': k})
      return jnp.mean(jnp.abs(out - labels))
    grad = jax.jit(jax.value_and_grad(loss), static_argnames='deterministic')
    fwd = jax.jit(lambda p, x, head=head: head.apply(p, x, deterministic=True))
    train[name], infer[name] = grad, fwd
    flops[f'train/{name}'] = benchmark_lib.cost_flops(grad.lower(params, projected, key).cost_analysis())
    flops[f'infer/{name}'] = benchmark_lib.cost_flops(fwd.lower(params, projected).cost_analysis())
  det = {n: train[n](params, projected, key, deterministic=True) for n in heads}
  agreement = {'output': rel_diff(infer['baseline'](params, projected),
                                  infer['current'](params, projected)),
               'loss_and_gradients_deterministic': rel_diff(det['baseline'], det['current'])}
  t_train = interleaved({n: (lambda f=f: f(params, projected, key)) for n, f in train.items()}, steps)
  t_infer = interleaved({n: (lambda f=f: f(params, projected)) for n, f in infer.items()}, steps)
  return {'batch': batch, 'length': length, 'head_kwargs': kwargs, 'agreement': agreement,
          'head_train': add_rates(t_train, {n: flops[f'train/{n}'] for n in heads}),
          'head_infer': add_rates(t_infer, {n: flops[f'infer/{n}'] for n in heads}),
          'train_ratio': t_train['baseline']['median'] / t_train['current']['median'],
          'infer_ratio': t_infer['baseline']['median'] / t_infer['current']['median']}


def step_case(baseline, dataset: str, batch: int, missing: str, recovery: str, steps: int) -> dict:
  import importlib  # pylint: disable=g-import-not-at-top
  from mmer_jax import stages  # pylint: disable=g-import-not-at-top
  from mmer_jax import train  # pylint: disable=g-import-not-at-top
  from mmer_jax.models import imder as imder_model  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f'configs.imder_{dataset}').get_config('synthetic')
  config.data.batch_size = batch
  config.train.missing = missing
  config.method.recovery = recovery
  config = stages.main_stage(config)
  calls, flops, compile_s = {}, {}, {}
  for name, module in (('baseline', baseline), ('current', imder_head)):
    run = train.Run(config)
    state = run.to_devices(run.init_state())
    batch_ = run.place(next(iter(run.train_batches(0))))
    imder_model.imder_head = module  # the head the model builds while this run traces
    try:
      flops[name] = _train_flops(run, state, batch_)
      holder = {'state': state}

      def call(run=run, holder=holder, batch_=batch_):
        holder['state'], metrics = run.train_step(holder['state'], batch_)
        return metrics

      start = time.perf_counter()
      jax.block_until_ready(call())  # traces and compiles with `module`
      compile_s[name] = time.perf_counter() - start
    finally:
      imder_model.imder_head = imder_head
    calls[name] = call
  timings = add_rates(interleaved(calls, steps), flops)
  return {'config': f'configs/imder_{dataset}.py:synthetic', 'batch': batch, 'missing': missing,
          'recovery': recovery, 'compile_s': compile_s, 'step': timings,
          'step_ratio': timings['baseline']['median'] / timings['current']['median']}


def _train_flops(run, state, batch):
  step = getattr(run.train_step, '__wrapped__', run.train_step)
  with jax.set_mesh(run.mesh):
    return benchmark_lib.cost_flops(step.lower(state, batch).cost_analysis())


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--baseline', required=True, help='git revision of the baseline head')
  parser.add_argument('--dataset', default='mosi', choices=sorted(NLEVELS))
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--length', type=int, default=48)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--step', action='store_true', help='also the whole complete-data train step')
  parser.add_argument('--step_steps', type=int, default=5)
  parser.add_argument('--missing', default='none')
  parser.add_argument('--recovery', default='zeros')
  parser.add_argument('--out', default=None, help='writes <out>.json')
  opts = parser.parse_args()
  baseline = load_baseline(opts.baseline)
  commit = subprocess.run(['git', 'rev-parse', opts.baseline], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
  report = {'baseline': commit, 'dataset': opts.dataset, 'jax': jax.__version__,
            'cpu_count': os.cpu_count(), 'load_before': os.getloadavg()[0]}
  with contextlib.redirect_stdout(sys.stderr):
    report['head'] = head_case(baseline, opts.dataset, opts.batch, opts.length, opts.steps)
    if opts.step:
      report['step'] = step_case(baseline, opts.dataset, opts.batch, opts.missing, opts.recovery,
                                 opts.step_steps)
  report['load_after'] = os.getloadavg()[0]
  if opts.out:
    os.makedirs(os.path.dirname(opts.out) or '.', exist_ok=True)
    with open(f'{opts.out}.json', 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1)
  print(json.dumps(report))


if __name__ == '__main__':
  main()
