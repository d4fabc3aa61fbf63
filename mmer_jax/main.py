"""The entry point: train, evaluate or gradient-check a method on a dataset, as a config says.

  python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic
  python -m mmer_jax.main --config=configs/bclstm_meld.py --config.data.features_dir=../shared/data/meld_text
  python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic --mode=evaluate
  python -m mmer_jax.main --config=configs/mmin_iemocap.py:synthetic --stage=stage1

This is the only module of the library that defines flags. `--workdir` defaults to
`runs/<config name>[_<variant>]`.

Multi-host data parallelism: the same command on every host, one process per host, joined into
one job by `jax.distributed.initialize()` (`--distributed` under SLURM, a TPU VM pod or Open MPI;
else `--coordinator_address`, `--num_processes`, `--process_id`): docs/scaling.md#commands.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mmer_jax import diagnostics
from mmer_jax import gradcheck
from mmer_jax import parallel
from mmer_jax import preemption
from mmer_jax import rng
from mmer_jax import train
from mmer_jax import workdir_lock
from mmer_jax.data import schema

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/<name>.py[:variant]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default runs/<config>[_<variant>]).')
_STAGE = flags.DEFINE_string('stage', None, 'Run only this stage of a staged config (e.g. stage1); '
                             'a later stage needs its init_from stage finished.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'gradcheck'],
                          'train (then evaluate), evaluate the best checkpoint, or gradcheck the loss.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Join a multi-process job (one process per host): '
    'jax.distributed.initialize(), which detects SLURM, TPU VM pods and Open MPI; the three '
    'flags below, where given, override what it detects.')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, which hosts the coordinator (every '
    'process passes the same); with --num_processes and --process_id: a plain cluster, no '
    'detection.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job (one per host).',
                                      lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes - 1.',
                                   lower_bound=0)
flags.mark_flags_as_required(['config'])


class _QuietLibraryInfo(std_logging.Filter):
  """Drops INFO lines from orbax (several per checkpoint); its warnings and errors still show."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def default_workdir(config_arg: str) -> str:
  path, _, variant = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{variant}' if variant else name)


def initialize_distributed() -> None:
  """`jax.distributed.initialize` as the flags ask (nothing without them); before any other JAX
  call. With all three of --coordinator_address, --num_processes and --process_id the cluster is
  not detected (a plain cluster, or local processes on one machine).

  On CPU, cross-process collectives use gloo: jax's default (`jax_cpu_collectives_implementation`
  is 'gloo' unless set otherwise, e.g. JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi)."""
  explicit = {'coordinator_address': _COORDINATOR_ADDRESS.value,
              'num_processes': _NUM_PROCESSES.value, 'process_id': _PROCESS_ID.value}
  given = {k: v for k, v in explicit.items() if v is not None}
  if not _DISTRIBUTED.value and not given:
    return
  if not _DISTRIBUTED.value and len(given) < len(explicit):
    raise app.UsageError(f'--{" --".join(sorted(set(explicit) - set(given)))}: needed with '
                         f'--{" --".join(sorted(given))} (or pass --distributed to detect the rest)')
  if _PROCESS_ID.value is not None and _NUM_PROCESSES.value is not None and (
      _PROCESS_ID.value >= _NUM_PROCESSES.value):
    raise app.UsageError(f'--process_id={_PROCESS_ID.value}: expected 0 .. {_NUM_PROCESSES.value - 1}')
  if len(given) == len(explicit):
    jax.distributed.initialize(**given, cluster_detection_method='deactivate')
  else:
    jax.distributed.initialize(**given)
  parallel.join_collectives()
  logging.info('process %d of %d; %d local of %d devices', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraryInfo())
  initialize_distributed()
  config = _CONFIG.value
  rng.configure(config)  # before any key is made
  workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS['config']))
  logging.info('devices: %s', jax.devices())
  try:
    if _MODE.value == 'train':
      with workdir_lock.hold(workdir), preemption.watch():
        train.train_and_evaluate(config, workdir, stage=_STAGE.value)
    elif _MODE.value == 'evaluate':
      train.evaluate_best(config, workdir)
    else:
      report = gradcheck.run(config)
      print(gradcheck.format_report(report))
      if not report['ok']:
        sys.exit(1)
  except (schema.DataError, diagnostics.TrainingDiverged, workdir_lock.WorkdirLocked) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except preemption.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr)
    sys.exit(preemption.EXIT_PREEMPTED)


if __name__ == '__main__':
  app.run(main)
