"""python -m mmer_jax.parity --method=mmin --authors_repo=PATH: prints one JSON line; exit 0 iff ok."""

import json
import sys

from absl import app
from absl import flags

from mmer_jax import parity

_METHOD = flags.DEFINE_string('method', 'mmin', f'One of {sorted(parity.METHODS)}.')
_REPO = flags.DEFINE_string('authors_repo', None, "A checkout of the authors' code.", required=True)
_PRECISIONS = flags.DEFINE_list('precisions', ['float32', 'float64'], 'Precisions to compare in.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the weights and the batch.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Examples in the compared batch.')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the JSON to this file.')


def main(argv):
  del argv
  report = parity.get_method(_METHOD.value).run(
      _REPO.value, precisions=tuple(_PRECISIONS.value), seed=_SEED.value, batch_size=_BATCH.value)
  line = json.dumps(report, sort_keys=False)
  print(line, flush=True)
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w', encoding='utf-8') as f:
      f.write(line + '\n')
  sys.exit(0 if report['ok'] else 1)


if __name__ == '__main__':
  app.run(main)
