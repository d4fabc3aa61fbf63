"""The entry point: train, evaluate or gradient-check a method on a dataset, as a config says.

  python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic
  python -m mmer_jax.main --config=configs/bclstm_meld.py --config.data.features_dir=../shared/data/meld_text
  python -m mmer_jax.main --config=configs/fusion_iemocap.py:synthetic --mode=evaluate
  python -m mmer_jax.main --config=configs/mmin_iemocap.py:synthetic --stage=stage1

This is the only module of the library that defines flags. `--workdir` defaults to
`runs/<config name>[_<variant>]`.
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
from mmer_jax import train
from mmer_jax.data import schema

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/<name>.py[:variant]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default runs/<config>[_<variant>]).')
_STAGE = flags.DEFINE_string('stage', None, 'Run only this stage of a staged config (e.g. stage1); '
                             'a later stage needs its init_from stage finished.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'gradcheck'],
                          'train (then evaluate), evaluate the best checkpoint, or gradcheck the loss.')
flags.mark_flags_as_required(['config'])


class _QuietLibraryInfo(std_logging.Filter):
  """Drops INFO lines from orbax (several per checkpoint); its warnings and errors still show."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def default_workdir(config_arg: str) -> str:
  path, _, variant = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{variant}' if variant else name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraryInfo())
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS['config']))
  logging.info('devices: %s', jax.devices())
  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(config, workdir, stage=_STAGE.value)
    elif _MODE.value == 'evaluate':
      train.evaluate_best(config, workdir)
    else:
      report = gradcheck.run(config)
      print(gradcheck.format_report(report))
      if not report['ok']:
        sys.exit(1)
  except (schema.DataError, diagnostics.TrainingDiverged) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
