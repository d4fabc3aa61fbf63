"""The interface the trainer knows: a method turns a config into a model with init, loss and predict.

`train.py`, `evaluate.py` and `benchmark.py` only ever call these; they never branch on a method's
name. Losses are per example (shape of `batch['example_mask']`: [B] for utterance batches, [B, L]
for dialogue batches) so the trainer can weight them by the mask and reduce them exactly the same
way on one device, under sharded jit, and under pmap.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import jax
import ml_collections

from mmer_jax.data import schema

Params = Any
Batch = Mapping[str, Any]


class Method(abc.ABC):
  """Base class; subclasses set `level` and implement the three functions below."""

  level: str = 'utterance'  # 'utterance' | 'dialogue': which batches the method eats
  needs_graph: bool = False  # dialogue batches carry a jraph graph only if the method asks

  def __init__(self, config: ml_collections.ConfigDict, spec: schema.DatasetSpec):
    self.config = config  # the whole (locked) config; `config.method` holds the method's knobs
    self.spec = spec

  @property
  def num_outputs(self) -> int:
    return self.spec.num_classes if self.spec.task == 'classification' else 1

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> Params:
    """Initial parameters for a batch of the method's level."""

  @abc.abstractmethod
  def loss(self, params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss per example and named per-example aux terms (same shape), train mode."""

  @abc.abstractmethod
  def predict(self, params: Params, batch: Batch) -> jax.Array:
    """Eval-mode outputs: logits [..., C] (classification) or scores [...] (regression)."""

  def gradcheck_loss(self, params: Params, batch: Batch, rng: jax.Array, *, target_params: Params):
    """`loss` with every stop-gradient target computed from `target_params` (fixed) instead of
    `params`; a method without such targets needs no override. Used by `--mode=gradcheck`."""
    del target_params
    return self.loss(params, batch, rng)

  @property
  def train_missing(self) -> str:
    """Modality dropout while training (see `steps.training_modality_mask`); a method whose
    variants fix it (e.g. MMIN's comparison rows) overrides this."""
    return self.config.train.missing

  @property
  def valid_conditions(self) -> tuple[str, ...]:
    """Missing conditions whose pooled predictions on the validation split give the model-
    selection metrics. `config.train.valid_conditions` wins when set; otherwise complete data."""
    conditions = self.config.train.get('valid_conditions')
    return tuple(conditions) if conditions else ('full',)

  def train_batch(self, batch: Batch) -> Batch:
    """Host-side additions to a training batch before it is placed on the devices (e.g. MMIN's
    cached teacher targets, joined on the batch's `index`); the default adds nothing."""
    return batch

  def trainable_mask(self, params: Params) -> Any:
    """Pytree of bools: which parameters the optimiser updates (frozen teachers say False)."""
    return jax.tree_util.tree_map(lambda _: True, params)

  def write_figures(self, params: Params, run, workdir: str) -> list[str]:
    """Hook run after the test grid with the selected parameters; returns the files it wrote."""
    del params, run, workdir
    return []

  def prepare(self, params: Params, run, workdir: str | None) -> Params:
    """Hook run once before training (e.g. a pretraining stage); returns the params to train.

    `run` is the `train.Run` being set up; `workdir` is None when nothing should be trained
    (benchmarks), in which case a method skips its pretraining stage.
    """
    del run, workdir
    return params


def supervised_loss(task: str, outputs: jax.Array, label: jax.Array) -> tuple[jax.Array, dict]:
  """Per-example task loss: cross-entropy (classification) or L1 (regression, as MMSA and IMDer).

  `outputs` are logits [..., C] or scores [..., 1] / [...]; aux holds per-example accuracy or
  absolute error for the training log.
  """
  import optax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if task == 'classification':
    loss = optax.softmax_cross_entropy_with_integer_labels(outputs, label.astype(jnp.int32))
    return loss, {'accuracy': (outputs.argmax(-1) == label).astype(jnp.float32)}
  pred = regression_output(outputs)
  err = jnp.abs(pred - label)
  return err, {'mae': err}


def regression_output(outputs: jax.Array) -> jax.Array:
  """[..., 1] -> [...]; scores are left as they are."""
  return outputs[..., 0] if outputs.ndim and outputs.shape[-1] == 1 else outputs
