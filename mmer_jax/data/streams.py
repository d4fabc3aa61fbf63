"""Batches for the trainer: one object per run that knows the level, sizes and padding of a config."""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import ml_collections
import numpy as np

from mmer_jax.data import grouping
from mmer_jax.data import pipeline
from mmer_jax.data import registry
from mmer_jax.data import schema
from mmer_jax.data import standardize


def load_dataset(config: ml_collections.ConfigDict) -> registry.Dataset:
  """Builds (if needed) and opens the dataset a config names; a features_dir always wins (and
  then the release's builder options, `data.options`, do not apply)."""
  data = config.data
  if data.features_dir:
    return registry.load('features_dir', data_dir=data.data_dir, features_dir=data.features_dir)
  return registry.load(data.name, data_dir=data.data_dir, manual_dir=data.manual_dir,
                       **data.options.to_dict())


class Streams:
  """Epochs of fixed-shape batches of one dataset at one level (utterance or dialogue)."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: registry.Dataset, *, level: str,
               host_batch: Callable[[dict], dict] | None = None,
               feature_stats: standardize.FeatureStats | None = None):
    """`host_batch`: the method's host-side hook, applied to every batch (train and eval), after
    the standardisation with `feature_stats` (none: features as stored)."""
    if level not in ('utterance', 'dialogue'):
      raise ValueError(f'level: expected utterance | dialogue, got {level!r}')
    self.config, self.dataset, self.level, self.host_batch = config, dataset, level, host_batch
    self.feature_stats = feature_stats
    self.spec: schema.DatasetSpec = dataset.spec
    self._dialogues = {}
    if level == 'dialogue':
      self._dialogues = {s: pipeline.load_dialogues(dataset.sources[s], self.spec) for s in schema.SPLITS}
    self.plans = self._host_mask_plans()

  def _host_mask_plans(self) -> grouping.EpochPlans | None:
    """The training epochs' plans when masks are drawn on the host (`train.mask_draw`)."""
    train = self.config.train
    draw = grouping.check_mask_draw(train.get('mask_draw', 'step'))
    if draw == 'step':
      return None  # (with train.missing='none', host draws keep each example's own modalities)
    if self.level != 'utterance':
      raise ValueError(f"train.mask_draw={draw!r} draws per utterance; this method's batches are "
                       "dialogues: use train.mask_draw='step'")
    from mmer_jax import steps  # the protocol's rates; a cycle at import time otherwise
    source = self.dataset.sources['train']
    if self.spec.incomplete:  # each example's own modalities, read once
      own = np.stack([pipeline.sample_available(ex, self.spec)
                      for ex in pipeline.read(source, range(len(source)))])
    else:
      own = np.tile(self.spec.available, (len(source), 1))
    return grouping.EpochPlans(own, seed=self.config.seed, batch_size=self.batch_size(True),
                               grouped=draw == 'host_grouped', missing_mode=train.missing,
                               rate=steps.training_rate(self.config), available=self.spec.available)

  def batch_size(self, train: bool) -> int:
    return self.config.data.batch_size if train else self.config.data.eval_batch_size

  def num_examples(self, split: str) -> int:
    if self.level == 'dialogue':
      return len(self._dialogues[split])
    return len(self.dataset.sources[split])

  def num_batches(self, split: str, train: bool) -> int:
    """Batches of an epoch; under host-grouped masks, of the first training epoch (they vary:
    `epoch_sizes`)."""
    if train and split == 'train' and self.plans is not None:
      return self.plans.sizes(1)[0]
    return pipeline.num_batches(self.num_examples(split), self.batch_size(train))

  def epoch_sizes(self, num_epochs: int) -> list[int]:
    """Training batches of each epoch 0..num_epochs-1."""
    if self.plans is not None:
      return self.plans.sizes(num_epochs)
    return [self.num_batches('train', train=True)] * num_epochs

  def length_grouping(self) -> dict:
    """`pipeline.dialogue_batches`' length-grouping arguments from `config.data` (absent: none)."""
    data = self.config.data
    return {'length_grouping': data.get('length_grouping', 'none') or 'none',
            'pool_batches': int(data.get('length_grouping_pool', 0) or 0)}

  def dialogue_lengths(self, split: str) -> list[int]:
    """Turns of each dialogue of a split, in split order."""
    return [len(d) for d in self._dialogues[split]]

  def epoch(self, split: str, epoch: int = 0, *, train: bool, start: int = 0,
            seed: int | None = None) -> Iterator[dict]:
    """Batches of one epoch (shuffled when `train`; dialogue batches grouped by length as
    `config.data.length_grouping` says), from batch index `start` on."""
    seed = self.config.seed if seed is None else seed
    size = self.batch_size(train)
    if self.level == 'dialogue':
      it = pipeline.dialogue_batches(
          self._dialogues[split], self.spec, dialogues_per_batch=size, seed=seed, epoch=epoch,
          shuffle=train, buckets=tuple(self.config.data.buckets), start=start,
          **self.length_grouping())
      start = 0
    elif train and split == 'train' and self.plans is not None:
      it = self._planned_epoch(epoch, start)
      start = 0
    else:
      source = self.dataset.sources[split]
      # Resuming mid-epoch skips whole batches without reading them.
      order = pipeline.epoch_order(len(source), seed=seed, epoch=epoch, shuffle=train)[start * size:]
      it = pipeline.utterance_batches(source, self.spec, batch_size=size,
                                      max_lens=self.config.data.max_lens.to_dict(), order=order)
      start = 0
    it = itertools.islice(it, start, None)
    if self.feature_stats is not None:
      it = map(lambda b: standardize.apply(b, self.feature_stats), it)
    if self.host_batch is not None:
      it = map(self.host_batch, it)
    return pipeline.prefetch(it, self.config.data.prefetch) if self.config.data.prefetch else it

  def _planned_epoch(self, epoch: int, start: int) -> Iterator[dict]:
    """Training batches of a host-drawn epoch (`grouping.EpochPlans`) from batch `start` on."""
    batches, masks = self.plans.plan(epoch)
    source, size = self.dataset.sources['train'], self.batch_size(True)
    for positions in batches[start:]:
      batch = pipeline.collate_utterances(pipeline.read(source, positions), self.spec,
                                          batch_size=size, indices=positions,
                                          max_lens=self.config.data.max_lens.to_dict())
      yield self.plans.annotate(batch, positions, masks)
