"""How IMDer's recovery cost grows with the sequence length and the number of missing modalities.

  python benchmarks/imder_scaling.py --lengths=24,48,96,192 --batch=32 --nfe=10

The sampler dominates IMDer's steps (docs/imder.md, Speed): every missing (modality, example)
slot costs NFE evaluations of one score U-Net. This times one score-network evaluation of the
authors' size (channels 32/64/128/256, 2-layer cross-attentions, d = 32) on `batch` slots for
each projected length L (the condition has the same length), and one whole draw (the
method's `recover`: the slots vmapped, DPM-Solver-2 with NFE `--nfe`) for `batch` slots of one
modality missing and for two (2 x batch slots, stacked networks). Prints one JSON line: per
length the median seconds of an evaluation and of a draw, and the XLA FLOPs of an evaluation.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from mmer_jax.diffusion import sampling
from mmer_jax.diffusion import sde as sde_lib
from mmer_jax.models import imder as imder_model
from mmer_jax.models import score_net


def _median_seconds(fn, *args, repeats=5):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--lengths', default='24,48,96,192')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--nfe', type=int, default=10, help='DPM-Solver-2 evaluations per draw')
  parser.add_argument('--repeats', type=int, default=5)
  opts = parser.parse_args()
  kwargs = imder_model.IMDer(modalities=('audio', 'visual', 'text')).score_net_kwargs()
  network = score_net.ScoreNet(**kwargs)
  sde = sde_lib.VESDE(sigma=25.)
  report = {'batch': opts.batch, 'nfe': opts.nfe, 'backend': jax.default_backend(), 'lengths': {}}
  for length in map(int, opts.lengths.split(',')):
    x = jnp.ones((opts.batch, length, 32))
    t = jnp.full((opts.batch,), 0.5)
    variables = network.init(jax.random.PRNGKey(0), x, t, x)
    evaluate = jax.jit(network.apply)
    flops = evaluate.lower(variables, x, t, x).compile().cost_analysis()
    flops = (flops[0] if isinstance(flops, (list, tuple)) else flops).get('flops')
    sample = sampling.get_sampler('dpm_solver', sde, (1, length, 32), num_steps=opts.nfe // 2)

    def draws(stacked, keys, conditions):
      """One draw per slot for M stacked networks: keys [M, S], conditions [M, S, L, d]."""
      def per_network(v, keys_m, cond_m):
        def one(key, cond):
          return sample(key, lambda y, s: network.apply(v, y, s, cond[None]))[0][0]
        return jax.vmap(one)(keys_m, cond_m)
      return jax.vmap(per_network)(stacked, keys, conditions)

    row = {'eval_s': _median_seconds(evaluate, variables, x, t, x, repeats=opts.repeats),
           'eval_gflop': flops / 1e9 if flops else None}
    draw = jax.jit(draws)
    for missing in (1, 2):
      stacked = jax.tree.map(lambda a, m=missing: jnp.stack([a] * m), variables)
      keys = jax.random.split(jax.random.PRNGKey(1), missing * opts.batch).reshape(
          missing, opts.batch, -1)
      conditions = jnp.ones((missing, opts.batch, length, 32))
      row[f'draw_{missing}_missing_s'] = _median_seconds(draw, stacked, keys, conditions,
                                                         repeats=max(2, opts.repeats // 2))
    report['lengths'][length] = row
    print(json.dumps({length: row}), flush=True)
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  main()
