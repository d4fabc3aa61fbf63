"""A JSON-able description of a built dataset: split sizes, modalities, task and labels."""

from __future__ import annotations

from mmer_jax.data import pipeline
from mmer_jax.data import registry
from mmer_jax.data import schema


def count_dialogues(source) -> int:
  """Distinct dialogue ids in a split (reads only that field's column of each record)."""
  ids = set()
  for start in range(0, len(source), 1024):
    for ex in pipeline.read(source, range(start, min(start + 1024, len(source)))):
      ids.add(ex['dialogue_id'])
  return len(ids)


def describe(dataset: registry.Dataset) -> dict:
  spec = dataset.spec
  splits = {}
  for split in schema.SPLITS:
    source = dataset.sources[split]
    splits[split] = {'examples': len(source),
                     'dialogues': count_dialogues(source) if spec.conversational else None}
  return {'dataset': dataset.name, 'splits': splits, **spec.describe()}
