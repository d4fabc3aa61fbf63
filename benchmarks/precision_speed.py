"""MMIN's train step in float32 and in bfloat16 (`config.precision`), side by side in one process.

  python benchmarks/precision_speed.py                               # configs/mmin_iemocap.py:synthetic
  python benchmarks/precision_speed.py --steps 10 --repeats 3 --data_dir /tmp/tfds

Times the main stage (stage `mmin`: student encoders, forward and backward CRAs, classifier, the
teacher's cached tables), the stage that dominates MMIN's training; stage 1 is the smaller
early-fusion model. Both precisions are built once (one dataset, one compiled step each), then
`mmer_jax.benchmark.benchmark` times them in alternation, `--repeats` times, float32 first in
even repeats and bfloat16 first in odd ones, so that a machine shared with other work slows both
alike. Each call reports the median of `--steps` train steps after `--warmup` untimed ones (and
the same for the eval step); the report gives, per precision, the median over the repeats of
those medians, and the ratios bfloat16 / float32 (below 1: bfloat16 is faster).

Prints ONE JSON line on stdout (progress and logs go to stderr). The machine's load average is
included: on a CPU shared with other jobs the absolute times say little; the ratio, measured
side by side, says more. On CPUs, XLA may run bfloat16 matmuls by converting to float32, so the
ratio there is no guide to an accelerator's.
"""

import argparse
import contextlib
import copy
import importlib
import json
import os
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402  pylint: disable=wrong-import-position

from mmer_jax import benchmark  # noqa: E402  pylint: disable=wrong-import-position
from mmer_jax import stages  # noqa: E402  pylint: disable=wrong-import-position
from mmer_jax import train  # noqa: E402  pylint: disable=wrong-import-position

PRECISIONS = ('float32', 'bfloat16')
TIMES = ('step_s_median', 'eval_step_s_median')


def load_config(spec: str):
  """'configs/<name>.py[:variants]' -> the config (`get_config(variants)`)."""
  path, _, arg = spec.partition(':')
  module = importlib.import_module('configs.' + pathlib.Path(path).stem)
  return module.get_config(arg or None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/mmin_iemocap.py:synthetic')
  parser.add_argument('--steps', type=int, default=10, help='timed train (and eval) steps per call')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps per call')
  parser.add_argument('--repeats', type=int, default=3, help='alternating calls per precision')
  parser.add_argument('--data_dir', default=None, help='config.data.data_dir (TFDS)')
  opts = parser.parse_args()

  config = load_config(opts.config)
  if opts.data_dir:
    config.data.data_dir = opts.data_dir
  config = stages.main_stage(config)
  reports = {p: [] for p in PRECISIONS}
  with contextlib.redirect_stdout(sys.stderr):  # keep stdout to the one JSON line
    configs, runs, dataset = {}, {}, None
    for precision in PRECISIONS:
      configs[precision] = copy.deepcopy(config)
      with configs[precision].unlocked():
        configs[precision].precision = precision
      runs[precision] = train.Run(configs[precision], dataset=dataset)
      dataset = runs[precision].dataset
    for repeat in range(opts.repeats):
      for precision in PRECISIONS if repeat % 2 == 0 else PRECISIONS[::-1]:
        report = benchmark.benchmark(configs[precision], steps=opts.steps, warmup=opts.warmup,
                                     run=runs[precision])
        reports[precision].append(report)
        print(f'repeat {repeat} {precision}: train {report["step_s_median"]:.4f} s, '
              f'eval {report["eval_step_s_median"]:.4f} s', file=sys.stderr, flush=True)

  out = {'config': opts.config, 'stage': config.stage_name, 'method': config.method.name,
         'batch_size': int(config.data.batch_size), 'steps': opts.steps, 'warmup': opts.warmup,
         'repeats': opts.repeats}
  for precision in PRECISIONS:
    out[precision] = {key: statistics.median(r[key] for r in reports[precision]) for key in TIMES}
    out[precision].update({f'{key}s': [r[key] for r in reports[precision]] for key in TIMES})
    out[precision]['compile_s'] = reports[precision][0]['compile_s']
    out[precision]['timed_compiles'] = sum(r['timed_compiles'] for r in reports[precision])
  out['ratio_bf16_over_f32'] = out['bfloat16']['step_s_median'] / out['float32']['step_s_median']
  out['eval_ratio_bf16_over_f32'] = (out['bfloat16']['eval_step_s_median']
                                     / out['float32']['eval_step_s_median'])
  first = reports['float32'][0]
  out.update({'backend': first['backend'], 'device_kind': first['device_kind'],
              'devices': first['devices'], 'cpu_count': os.cpu_count(),
              'load_average': [round(x, 2) for x in os.getloadavg()], 'jax': jax.__version__})
  print(json.dumps(out), flush=True)


if __name__ == '__main__':
  main()
