"""Speed of M3ER's numerical pieces: compiled batched proxy features vs a numpy loop, and CCA fits.

  python benchmarks/m3er_proxy_speed.py               # full: ~1 minute on 2 CPU cores
  python benchmarks/m3er_proxy_speed.py --quick       # smoke run: small bank, few rows

Proxy features (`mmer_jax.ops.proxy`): examples/s of the jitted batched `regenerate` (batches of
`--batch`, compile and first call excluded, median of `--repeats` calls) against
`regenerate_numpy_loop` on the first `--loop_queries` queries of the same batch (median over
`--repeats` passes, after one untimed pass), and their ratio. Shapes of synthetic IEMOCAP-4
pooled features: a bank of 4425 training rows, text 1024 -> visual 342 and audio 130 -> text 1024,
K = `--num_neighbors`. The features are Gaussian with an offset (timings do not depend on them),
the linear map is fitted on the bank (`fit_linear_map`, also timed).

CCA (`mmer_jax.ops.cca.fit_cca`, num_components 100): seconds per fit on the synthetic
mosei_emotions training split's utterance-level features (each sequence modality averaged over
its valid frames: audio 74, visual 35, text 768; 16326 rows), for the pairs audio-visual,
audio-text, visual-text. The split comes from `mmer_jax.data.synthetic_generator` (pure numpy,
chunk by chunk, seed 0 and the release's default signal: the rows the TFDS builder
`synthetic/mosei_emotions` stores), pooled chunk by chunk so the frames are never all in memory.

Prints one JSON object (progress on stderr).
"""

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position
import timing  # noqa: E402  pylint: disable=wrong-import-position

from mmer_jax.data import synthetic_generator as gen  # noqa: E402
from mmer_jax.ops import cca  # noqa: E402  pylint: disable=wrong-import-position
from mmer_jax.ops import proxy  # noqa: E402  pylint: disable=wrong-import-position

IEMOCAP_BANK = 4425  # synthetic iemocap_4 training utterances
# (source, dim, target, dim, bank rows): synthetic IEMOCAP-4's pairs, and real RAVDESS's (240
# training clips, audio 69 -> visual 56), where a per-sample loop pays mostly call overheads.
PROXY_PAIRS = (('text', 1024, 'visual', 342, IEMOCAP_BANK), ('audio', 130, 'text', 1024, IEMOCAP_BANK),
               ('audio', 69, 'visual', 56, 240))
CCA_PAIRS = (('audio', 'visual'), ('audio', 'text'), ('visual', 'text'))


def _log(*args):
  print(*args, file=sys.stderr, flush=True)


def pooled_split(release_name: str, split: str, max_rows: int | None = None) -> dict:
  """Utterance-level features {modality: [N, D] float32}: each sequence's mean over valid frames."""
  release = gen.RELEASES[release_name]
  size = release.sizes[split] if max_rows is None else min(max_rows, release.sizes[split])
  parts = {m: [] for m in release.dims}
  for chunk in gen.generate_split(release, release.signal, 0, split, size):
    for m, x in chunk.features.items():
      lengths = chunk.lengths[m].astype(np.float32)
      parts[m].append(x.sum(axis=1) / lengths[:, None])  # padding frames are zeros
  return {m: np.concatenate(v) for m, v in parts.items()}


def time_proxy(source_dim: int, target_dim: int, bank_rows: int, opts,
               rng: np.random.Generator) -> dict:
  """Compiled batched `regenerate` vs the numpy loop for one (source -> target) pair."""
  bank_rows = min(bank_rows, opts.bank)
  bank = (rng.standard_normal((bank_rows, source_dim)) + 0.5).astype(np.float32)
  partner = (bank[:, :min(source_dim, target_dim)].sum(1, keepdims=True) / 10
             + rng.standard_normal((bank_rows, target_dim))).astype(np.float32)
  start = time.perf_counter()
  tmap = proxy.fit_linear_map(bank, partner)
  fit_seconds = time.perf_counter() - start
  query = (rng.standard_normal((opts.batch, source_dim)) + 0.5).astype(np.float32)
  k = opts.num_neighbors
  bank_d, query_d = jax.device_put(bank), jax.device_put(query)
  tmap_d = jax.device_put(tmap)
  run = lambda: jax.block_until_ready(  # noqa: E731
      proxy.regenerate(query_d, bank_d, tmap_d, num_neighbors=k, ridge=opts.ridge))
  start = time.perf_counter()
  run()
  compile_seconds = time.perf_counter() - start
  batched = timing.time_calls(run, opts.repeats)
  loop_q = query[:opts.loop_queries]
  loop = timing.time_calls(lambda: proxy.regenerate_numpy_loop(
      loop_q, bank, tmap, num_neighbors=k, ridge=opts.ridge), opts.repeats)
  got = np.asarray(run())[:len(loop_q)]
  ref = proxy.regenerate_numpy_loop(loop_q, bank, tmap, num_neighbors=k, ridge=opts.ridge)
  batched_rate = opts.batch / batched['median']
  loop_rate = len(loop_q) / loop['median']
  return {
      'bank': [bank_rows, source_dim], 'target_dim': target_dim,
      'fit_linear_map_seconds': fit_seconds,
      'compiled_first_call_seconds': compile_seconds,
      'batched_seconds_per_batch': batched,
      'batched_examples_per_second': batched_rate,
      'numpy_loop_seconds': loop, 'numpy_loop_queries': len(loop_q),
      'numpy_loop_examples_per_second': loop_rate,
      'speedup': batched_rate / loop_rate,
      'max_abs_difference_vs_loop': float(np.abs(got - ref).max()),
      'max_abs_output': float(np.abs(ref).max()),
  }


def time_cca(features: dict, opts) -> dict:
  out = {}
  for a, b in CCA_PAIRS:
    times, fit = [], None
    for _ in range(opts.cca_repeats):
      start = time.perf_counter()
      fit = cca.fit_cca(features[a], features[b], num_components=100)
      times.append(time.perf_counter() - start)
    rho = fit['correlations']
    out[f'{a}-{b}'] = {'dims': [features[a].shape[1], features[b].shape[1]],
                       'components': len(rho), 'seconds': sorted(times)[len(times) // 2],
                       'seconds_all': times,
                       'top_correlations': [round(float(r), 4) for r in rho[:5]]}
    _log(f'cca {a}-{b}: {out[f"{a}-{b}"]}')
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_neighbors', type=int, default=10, help='K nearest bank rows')
  parser.add_argument('--ridge', type=float, default=1e-3, help='relative ridge of the K x K solve')
  parser.add_argument('--batch', type=int, default=256, help='queries per compiled call')
  parser.add_argument('--loop_queries', type=int, default=64, help='queries of the numpy loop')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--cca_repeats', type=int, default=3)
  parser.add_argument('--quick', action='store_true',
                      help='smoke run: bank 500, batch 32, 8 loop queries, 1024 CCA rows')
  opts = parser.parse_args()
  opts.bank = IEMOCAP_BANK
  cca_rows = None
  if opts.quick:
    opts.bank, opts.batch, opts.loop_queries, opts.repeats, opts.cca_repeats = 500, 32, 8, 2, 1
    cca_rows = 1024
  rng = np.random.default_rng(0)
  report = {
      'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
      'cpu_count': os.cpu_count(), 'load_average': os.getloadavg(),
      'jax': jax.__version__, 'numpy': np.__version__, 'quick': opts.quick,
      'num_neighbors': opts.num_neighbors, 'ridge': opts.ridge, 'batch': opts.batch,
      'proxy_features': 'Gaussian + 0.5 offset, synthetic iemocap_4 and RAVDESS pooled shapes',
      'proxy': {},
  }
  for src, src_dim, tgt, tgt_dim, rows in PROXY_PAIRS:
    name = f'{src}{src_dim}->{tgt}{tgt_dim} (bank {min(rows, opts.bank)})'
    report['proxy'][name] = time_proxy(src_dim, tgt_dim, rows, opts, rng)
    _log(f'proxy {name}: {report["proxy"][name]}')
  start = time.perf_counter()
  features = pooled_split('mosei_emotions', 'train', cca_rows)
  report['cca_data'] = {
      'source': ('mmer_jax.data.synthetic_generator (seed 0, default signal), '
                 'the rows of synthetic/mosei_emotions'),
      'split': 'train', 'rows': len(features['audio']),
      'dims': {m: x.shape[1] for m, x in features.items()},
      'pooling': 'mean over valid frames', 'generate_seconds': time.perf_counter() - start}
  report['cca'] = time_cca(features, opts)
  report['load_average_end'] = os.getloadavg()  # other work on the machine skews the timings
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  main()
