"""MMGCN implementation variants timed side by side in one process, interleaved.

  python benchmarks/mmgcn_variants.py --depth=64 --rounds=5 \\
      --variant=layered:method.fused=False --variant=fused: --variant=fused_rbg:rng_impl=rbg

Each `--variant=NAME:field=value,field=value` is `configs/mmgcn_iemocap.py:synthetic` (authors'
layer form, `--depth` layers, 16 dialogues a batch) with those overrides. Every variant is built
and compiled first, on the same first training batch and eval batch (the unbucketed epoch 0);
then `--rounds` rounds time one train step and one eval step of each variant in turn, so a load
that comes and goes on a shared machine touches every variant alike. Prints one JSON line: per
variant the median, min and max seconds of its train and eval steps, and the medians relative
to the first variant.
"""

import argparse
import ast
import json
import pathlib
import statistics
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs import mmgcn_iemocap  # noqa: E402  pylint: disable=wrong-import-position
from mmer_jax import rng  # noqa: E402  pylint: disable=wrong-import-position
from mmer_jax import train  # noqa: E402  pylint: disable=wrong-import-position


def parse_variant(text: str) -> tuple[str, dict]:
  """'NAME:a.b=1,c=x' -> ('NAME', {'a.b': 1, 'c': 'x'}); values as Python literals or strings."""
  name, _, rest = text.partition(':')
  overrides = {}
  for item in filter(None, rest.split(',')):
    key, _, value = item.partition('=')
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  return name, overrides


def build(depth: int, overrides: dict):
  """(run, state, train batch, eval params, eval batch, timed train call, timed eval call)."""
  config = mmgcn_iemocap.get_config('synthetic')
  config.method.num_layers = depth
  config.method.gcn_form = 'authors'
  config.data.prefetch = 0
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  rng.configure(config)
  run = train.Run(config)
  holder = {'state': run.to_devices(run.init_state())}
  batch = run.place(next(iter(run.train_batches(0))))
  eval_batch = run.place(next(iter(run.streams.epoch(config.eval.split, train=False))))
  params = jax.tree_util.tree_map(lambda x: x.copy(), run.device_params(run.from_devices(holder['state']).eval_params))

  def train_call():
    holder['state'], metrics = run.train_step(holder['state'], batch)
    return metrics

  def eval_call():
    return run._eval_step(params, eval_batch, run.predict_rng)  # pylint: disable=protected-access

  return config, train_call, eval_call


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--depth', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--variant', action='append', required=True)
  opts = parser.parse_args()
  variants = [parse_variant(v) for v in opts.variant]
  built, compile_s = {}, {}
  for name, overrides in variants:
    config, train_call, eval_call = build(opts.depth, overrides)
    start = time.perf_counter()
    _timed(train_call)
    _timed(eval_call)
    compile_s[name] = time.perf_counter() - start
    built[name] = (config, train_call, eval_call)
    print(f'{name}: compiled in {compile_s[name]:.1f} s', file=sys.stderr, flush=True)
  times = {name: {'train': [], 'eval': []} for name in built}
  for r in range(opts.rounds):
    for name, (config, train_call, eval_call) in built.items():
      rng.configure(config)
      times[name]['train'].append(_timed(train_call))
      times[name]['eval'].append(_timed(eval_call))
    print(f'round {r + 1}: ' + ', '.join(f'{n} {t["train"][-1]:.3f}/{t["eval"][-1]:.3f}'
                                         for n, t in times.items()), file=sys.stderr, flush=True)
  first = variants[0][0]
  report = {'depth': opts.depth, 'rounds': opts.rounds, 'variants': {}}
  for name, overrides in variants:
    entry = {'overrides': overrides, 'compile_s': compile_s[name]}
    for kind in ('train', 'eval'):
      t = times[name][kind]
      entry[kind] = {'median': statistics.median(t), 'min': min(t), 'max': max(t)}
      entry[f'{kind}_vs_{first}'] = statistics.median(times[first][kind]) / statistics.median(t)
    report['variants'][name] = entry
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  main()
