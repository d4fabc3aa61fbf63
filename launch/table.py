"""Trains a paper table's runs from its spec and writes the table (mmer_jax/tables.py).

  python launch/table.py --spec=launch/tables/imder_mosi.py --workdir=runs/imder_table
  python launch/table.py --spec=launch/tables/mmgcn_iemocap6.py --workdir=runs/mmgcn_table \
      --seeds=0 --rows=avt,t --override=--config.train.num_epochs=5
  python launch/table.py --spec=launch/tables/imder_mosi.py --workdir=runs/imder_table --print

Runs without results run here (`--jobs_at_once` side by side, `--devices_per_job` GPUs each),
in waves so that a row that reuses another row's run starts after it; finished runs are
skipped, so an interrupted table resumes. Then `<workdir>/table.json` / `table.md` and the
spec's analysis. Specs and what each table is: docs/compare.md#tables.
"""

import json
import os
import shlex
import sys

sys.path.insert(0, os.getcwd())  # config files import `configs.default` from the repository

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from mmer_jax import jobs
from mmer_jax import tables
from mmer_jax import workdir_lock

_SPEC = flags.DEFINE_string('spec', None, 'The table spec (launch/tables/<name>.py[:arg]).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the runs and the table go.')
_SEEDS = flags.DEFINE_list('seeds', None, "Seeds (default: the spec's).")
_ROWS = flags.DEFINE_list('rows', None, "Rows to run and tabulate (default: all the spec's).")
_OVERRIDE = flags.DEFINE_multi_string('override', [], 'Extra --config.x=v for every run.')
_TRAIN = flags.DEFINE_bool('train', True, 'Run the pending runs (--notrain: only tabulate what ran).')
_PRINT = flags.DEFINE_bool('print', False, 'Print the pending commands, one per line, by wave.')
_JOBS = flags.DEFINE_integer('jobs_at_once', 1, 'Runs side by side.')
_DEVICES = flags.DEFINE_integer('devices_per_job', 0, 'GPUs per run (CUDA_VISIBLE_DEVICES); 0: all.')
flags.mark_flags_as_required(['spec', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  path, _, arg = _SPEC.value.partition(':')
  spec = tables.load_spec(path, arg or None)
  seeds = [int(s) for s in _SEEDS.value] if _SEEDS.value else list(spec.seeds)
  rows = _ROWS.value or list(spec.rows)
  unknown = sorted(set(rows) - set(spec.rows))
  if unknown:
    raise app.UsageError(f'--rows: {unknown} not in the spec {path} (rows: {list(spec.rows)})')
  workdir = _WORKDIR.value
  waves = tables.pending(workdir, spec, rows, seeds, _OVERRIDE.value,
                         'python' if _PRINT.value else sys.executable)
  if _PRINT.value:
    for k, wave in enumerate(waves):
      print(f'# wave {k}')
      for command in wave:
        print(shlex.join(command))
    return
  with workdir_lock.hold(workdir):  # one table launcher per workdir (each run locks its own)
    for wave in waves if _TRAIN.value else ():
      jobs.run(wave, jobs_at_once=_JOBS.value, devices_per_job=_DEVICES.value)
    table = tables.aggregate(workdir, spec, tables.with_needs(spec, rows), seeds)
    table['overrides'] += list(_OVERRIDE.value)
    if spec.analysis is not None:
      table['analysis'] = spec.analysis(workdir, spec, table)
    tables.write(workdir, table, spec)
  print(tables.markdown(table, spec))
  print(f'wrote {os.path.join(workdir, "table.json")}', json.dumps({'rows': len(table['rows'])}))

def _main(argv):
  try:
    main(argv)
  except workdir_lock.WorkdirLocked as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(_main)
