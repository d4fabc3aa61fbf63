"""Wall-clock of a vmapped seed sweep against one run and against the separate runs it replaces.

  python benchmarks/sweep_speed.py --config=configs/fusion_iemocap.py:synthetic --members=8
  python benchmarks/sweep_speed.py --config=configs/fusion_iemocap.py:smoke --members=4 --separate=0

Each timing is a fresh process, as a user would run it (compilation included):
  one       python -m mmer_jax.main --config=CONFIG --config.seed=0
  sweep     python launch/sweep.py --config=CONFIG --group=0 with seeds 0..members-1 (one group)
  separate  the same members as `members` runs of main, one after another (`--separate=0`: skip)
and, where the separate runs ran, the largest difference between a member's results.json and its
separate run's (every metric of every grid row). Prints ONE JSON line.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string('config', 'configs/fusion_iemocap.py:synthetic', 'Config (file[:variant]).')
_MEMBERS = flags.DEFINE_integer('members', 8, 'Seeds 0..members-1.')
_SEPARATE = flags.DEFINE_integer('separate', 1, '1: also time the separate runs (slow), 0: skip.')
_OVERRIDES = flags.DEFINE_multi_string('override', [], 'Extra --config.x=v for every run.')
_KEEP = flags.DEFINE_string('workdir', None, 'Keep the runs here (default: a temporary folder).')


def _timed(command: list[str]) -> float:
  start = time.perf_counter()
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def _max_difference(path_a: str, path_b: str) -> float:
  with open(path_a, encoding='utf-8') as f:
    a = json.load(f)
  with open(path_b, encoding='utf-8') as f:
    b = json.load(f)
  return max(abs(x['metrics'][k] - y['metrics'][k]) for x, y in zip(a['rows'], b['rows'])
             for k in x['metrics'])


def main(argv):
  del argv
  root = _KEEP.value or tempfile.mkdtemp(prefix='sweep_speed_')
  members = list(range(_MEMBERS.value))
  # The sweep's members come from a small config file that wraps CONFIG with its own sweep().
  path, _, variant = _CONFIG.value.partition(':')
  module = os.path.splitext(os.path.relpath(path))[0].replace(os.sep, '.')
  wrapper = os.path.join(root, 'sweep_config.py')
  os.makedirs(root, exist_ok=True)
  with open(wrapper, 'w', encoding='utf-8') as f:
    f.write(f'from {module} import get_config  # noqa: F401\n\n\n'
            f'def sweep():\n  return [{{"seed": s}} for s in {members}]\n')
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([os.getcwd(), os.environ.get('PYTHONPATH', '')])}
  os.environ.update(env)
  extra = list(_OVERRIDES.value)
  sweep_dir = os.path.join(root, 'sweep')
  report = {'config': _CONFIG.value, 'members': len(members), 'overrides': extra}
  report['sweep_s'] = _timed([sys.executable, 'launch/sweep.py', f'--config={wrapper}:{variant}',
                              *extra, f'--workdir={sweep_dir}', '--group=0'])
  report['one_s'] = _timed([sys.executable, '-m', 'mmer_jax.main', f'--config={_CONFIG.value}',
                            *extra, '--config.seed=0', f'--workdir={os.path.join(root, "one")}'])
  report['sweep_over_one'] = report['sweep_s'] / report['one_s']
  if _SEPARATE.value:
    times, diffs = [], []
    for seed in members:
      workdir = os.path.join(root, f'separate_{seed}')
      times.append(_timed([sys.executable, '-m', 'mmer_jax.main', f'--config={_CONFIG.value}',
                           *extra, f'--config.seed={seed}', f'--workdir={workdir}']))
      diffs.append(_max_difference(os.path.join(sweep_dir, f'seed={seed}', 'results.json'),
                                   os.path.join(workdir, 'results.json')))
    report['separate_s'] = sum(times)
    report['separate_each_s'] = times
    report['separate_over_sweep'] = report['separate_s'] / report['sweep_s']
    report['max_metric_difference'] = max(diffs)
  print(json.dumps(report))
  if not _KEEP.value:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
