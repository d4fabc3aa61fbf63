"""How MMGCN's step time grows with dialogue length and with depth.

  python benchmarks/mmgcn_scaling.py --lengths=16,32,64,128 --depths=1,4,16,64

Times the compiled training step (forward, loss, backward, Adam) and the eval forward of the
MMGCN method on batches of 16 dialogues with IEMOCAP's feature sizes (text 100, audio 1582, visual
342) and all three modalities: every dialogue L turns long, for each L in `--lengths` at depth 4,
and the L = `--depth_length` batch at each depth in `--depths`. Edges grow with the square of the
turns (3 L^2 + 6 L per dialogue), the GCN's work linearly with depth. Both message-passing
layouts are timed (`--layouts`): 'blocks' (the configs' default) and 'edges' (the jraph edge
list). Prints one JSON line per measurement and a final JSON report with the XLA FLOPs of each
train step.
"""

import argparse
import json
import pathlib
import sys

import jax
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from configs import mmgcn_iemocap  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax import steps  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax.data import pipeline  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax.data import schema  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax.methods import mmgcn  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import timing  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

DIMS = {'audio': 1582, 'visual': 342, 'text': 100}
DIALOGUES = 16


def _spec():
  return schema.DatasetSpec(
      name='scaling', task='classification', label_names=tuple(f'c{k}' for k in range(6)),
      conversational=True, modalities={m: schema.ModalitySpec('utterance', d) for m, d in DIMS.items()})


def _batch(length: int, spec, method):
  rng = np.random.default_rng(length)
  dialogues = [pipeline.Dialogue(
      dialogue_id=f'd{k}', features={m: rng.standard_normal((length, d)).astype(np.float32)
                                     for m, d in DIMS.items()},
      label=rng.integers(6, size=length), speaker=(np.arange(length) % 2).astype(np.int32))
               for k in range(DIALOGUES)]
  batch = pipeline.collate_dialogues(dialogues, spec, dialogues_per_batch=DIALOGUES, buckets=(length,))
  return method.host_batch(batch, 1)


def measure(layout: str, depth: int, length: int, repeats: int) -> dict:
  config = mmgcn_iemocap.get_config('synthetic')
  config.method.num_layers = depth
  config.method.message_passing = layout
  spec = _spec()
  method = mmgcn.MMGCNMethod(config, spec)
  batch = _batch(length, spec, method)
  params = method.init(jax.random.PRNGKey(0), batch)
  state = steps.TrainState.create(params=params, tx=optax.adam(3e-4), rng=jax.random.PRNGKey(1))
  train = jax.jit(lambda s, b: steps.train_step(s, b, method=method))
  evaluate = jax.jit(lambda p, b: method.predict(p, b, None))
  cost = train.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  box = {'state': state}

  def step():
    box['state'], metrics = train(box['state'], batch)
    jax.block_until_ready(metrics)

  row = {'layout': layout, 'depth': depth, 'length': length,
         'edges': DIALOGUES * (3 * length * length + 6 * length),
         'train_s': timing.time_calls(step, repeats)['median'],
         'infer_s': timing.time_calls(lambda: jax.block_until_ready(evaluate(params, batch)), repeats)['median'],
         'train_gflop': (cost or {}).get('flops', 0.0) / 1e9}
  print(json.dumps(row), flush=True)
  return row


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--lengths', default='16,32,64,128')
  parser.add_argument('--depths', default='1,4,16,64')
  parser.add_argument('--depth_length', type=int, default=48)
  parser.add_argument('--layouts', default='blocks,edges')
  parser.add_argument('--repeats', type=int, default=3)
  opts = parser.parse_args()
  rows = []
  for layout in opts.layouts.split(','):
    rows += [measure(layout, 4, int(n), opts.repeats) for n in opts.lengths.split(',')]
    rows += [measure(layout, int(d), opts.depth_length, opts.repeats) for d in opts.depths.split(',')
             if int(d) != 4 or opts.depth_length not in map(int, opts.lengths.split(','))]
  print(json.dumps({'backend': jax.default_backend(), 'dialogues': DIALOGUES, 'rows': rows}), flush=True)


if __name__ == '__main__':
  main()
