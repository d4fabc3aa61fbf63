"""Builds a dataset if needed and prints a JSON summary of it.

  python -m mmer_jax.data --dataset=synthetic/iemocap_4
  python -m mmer_jax.data --dataset=features_dir --features_dir=../shared/data/meld_text
  python -m mmer_jax.data --dataset=iemocap_6 --manual_dir=~/data/mmgcn

Prints {"dataset", "splits": {split: {"examples": n, "dialogues": d or null}}, "task",
"modalities", "labels" | "label_range"}; `dialogues` is null for utterance corpora. A failure exits
non-zero with the error on stderr.
"""

import contextlib
import json
import sys

from absl import app
from absl import flags

from mmer_jax.data import registry
from mmer_jax.data import summary

_DATASET = flags.DEFINE_enum('dataset', None, registry.NAMES, 'Dataset name.', required=True)
_FEATURES_DIR = flags.DEFINE_string('features_dir', None, 'A generic feature directory (dataset features_dir).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Where your copy of an official release is.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Where built datasets live (TFDS data_dir).')


def main(argv):
  del argv
  try:
    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress; stdout is the JSON only
      dataset = registry.load(_DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                              features_dir=_FEATURES_DIR.value)
  except (ValueError, OSError) as e:  # DataError is a ValueError
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  print(json.dumps(summary.describe(dataset), sort_keys=False))


if __name__ == '__main__':
  app.run(main)
