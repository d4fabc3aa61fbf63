"""The interface the trainer knows: a method turns a config into a model with init, loss and predict.

`train.py`, `evaluate.py`, `gradcheck.py` and `benchmark.py` only ever call these; they never
branch on a method's name. Losses are per example (the shape of `batch['example_mask']`), so the
trainer can weight them by the mask and reduce them the same way on one device, under sharded jit
and under pmap. In one run a method's parameters come from `init`, then the trainer's
`init_from`, then `fit` (what is fitted on the training split without gradient steps, kept as
frozen leaves); `loss` and `predict` are pure functions of (params, batch, rng). Variants are
resolved into config fields first (`resolve_config`). Under mixed precision a method builds its
modules with `self.dtype` and casts its models' outputs to float32 (`full_precision`).

Details: docs/training.md#the-method-interface.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmer_jax.data import schema
from mmer_jax.models import encoders as encoders_lib

Params = Any
Batch = Mapping[str, Any]

# config.precision -> the models' compute dtype (None: Flax's promotion of inputs and parameters,
# float32 in training and float64 in the gradient check).
PRECISIONS = {'float32': None, 'bfloat16': jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict, method: str | None = None):
  """The compute dtype `config.precision` asks for (None for 'float32'; a config without the
  field is float32). Raises ValueError naming the field (and `method`) for any other value."""
  precision = config.get('precision', 'float32')
  if precision not in PRECISIONS:
    raise ValueError(f'config.precision: expected one of {tuple(PRECISIONS)}, got {precision!r}'
                     + (f' (method {method})' if method else ''))
  return PRECISIONS[precision]


def full_precision(tree):
  """Every floating array of `tree` in at least float32 (bfloat16 -> float32, float32 and the
  gradient check's float64 unchanged); other leaves and None as they are."""
  def cast(x):
    if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating):
      return x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return x
  return jax.tree_util.tree_map(cast, tree)


class Method(abc.ABC):
  """Base class; subclasses set `level` and implement `init`, `loss` and `predict`."""

  level: str = 'utterance'  # 'utterance' | 'dialogue': which batches the method eats
  # The values `config.method.variant` may take for this method (empty: no variants); a variant
  # may resolve to another method (`resolve_config`). The contract test covers each of them.
  variants: tuple[str, ...] = ()
  # Whether evaluation predicts in batches of one missing pattern (`batch['pattern_missing']`,
  # data/grouping.py): for a method that then runs cheaper and predicts the same (IMDer).
  groups_patterns: bool = False

  def __init__(self, config: ml_collections.ConfigDict, spec: schema.DatasetSpec):
    self.config = config  # the whole resolved (locked) config; `config.method` holds the knobs
    self.spec = spec
    # The models' compute dtype (`config.precision`; module docstring).
    self.dtype = compute_dtype(config, config.method.get('name'))

  @classmethod
  def resolve_config(cls, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets the fields a variant implies (called on an unlocked copy before training).

    May hand the run to another method by setting `config.method.name` (MMIN's comparison rows
    are early fusion); `methods.resolve_config` then resolves that method in turn.
    """
    return config

  @property
  def num_outputs(self) -> int:
    return self.spec.num_classes if self.spec.task == 'classification' else 1

  @property
  def modalities(self) -> tuple[str, ...]:
    """The dataset's modalities in the library's (audio, visual, text) order."""
    return tuple(self.spec.ordered_modalities())

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> Params:
    """Initial parameters for a batch of the method's level."""

  def fit(self, params: Params, batches: Callable[[], Iterable[Batch]]) -> Params:
    """Parameters with the leaves fitted on the training split added or filled in.

    `batches()` iterates the training split once in its fixed order (eval batches, `host_batch`
    applied). Run once per stage, after `init_from`, never on resume. Default: nothing to fit.
    """
    del batches
    return params

  @abc.abstractmethod
  def loss(self, params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss per example and named per-example aux terms (same shape), train mode."""

  @abc.abstractmethod
  def predict(self, params: Params, batch: Batch, rng: jax.Array) -> jax.Array:
    """Eval-mode outputs: logits [..., C] (classification) or scores [...] (regression).

    `rng` is the evaluation's key; a stochastic prediction draws per example from
    `example_rngs(rng, batch)`, so it does not depend on how the split was batched.
    """

  def gradcheck_loss(self, params: Params, batch: Batch, rng: jax.Array, *, target_params: Params):
    """`loss` with every stop-gradient target computed from `target_params` (fixed) instead of
    `params`; a method without such targets needs no override. Used by `--mode=gradcheck`."""
    del target_params
    return self.loss(params, batch, rng)

  @property
  def valid_conditions(self) -> tuple[str, ...]:
    """Missing conditions whose pooled predictions on the validation split give the model-
    selection metrics: `config.train.valid_conditions`, complete data when unset."""
    conditions = self.config.train.valid_conditions
    return tuple(conditions) if conditions else ('full',)

  def host_batch(self, batch: Batch, num_shards: int = 1) -> Batch:
    """Host-side additions to every batch (training and evaluation) before it is placed on the
    devices, e.g. a graph method's `data.graphs.add_dialogue_graph`, which builds one graph per
    each of the `num_shards` devices the batch is split over; the default adds nothing."""
    del num_shards
    return batch

  def ema_mask(self, params: Params) -> Any | None:
    """Pytree of bools: the parameters evaluation takes from the EMA when `train.ema_decay` is
    set (IMDer: the score networks only); None, the default, means all of them."""
    del params
    return None

  def trainable_mask(self, params: Params) -> Any:
    """Pytree of bools: which parameters the optimiser updates (frozen teachers and fitted
    tables say False; the step does not differentiate those)."""
    return jax.tree_util.tree_map(lambda _: True, params)


def training_tables(batches: Callable[[], Iterable[Batch]], compute: Callable[[Batch], Mapping],
                    what: str) -> dict[str, np.ndarray]:
  """{name: [N, ...]}: `compute(batch)`'s per-example rows ({name: [B, ...]}) over one pass of
  `batches()` (a `fit`'s training split), real rows only, row i = the example whose `index` is i.

  Raises ValueError (naming `what`) unless the batches hold every example 0..N-1 exactly once.
  """
  parts, indices = {}, []
  for batch in batches():
    valid = np.asarray(batch['example_mask'])
    indices.append(np.asarray(batch['index'])[valid])
    for name, rows in compute(batch).items():
      parts.setdefault(name, []).append(np.asarray(rows)[valid])
  index = np.concatenate(indices)
  if not np.array_equal(np.sort(index), np.arange(len(index))):
    raise ValueError(f'{what}: the training batches must hold every example once '
                     f'(indices 0..{len(index) - 1})')
  order = np.argsort(index)
  return {name: np.concatenate(rows)[order] for name, rows in parts.items()}


def example_rngs(rng: jax.Array, batch: Batch) -> jax.Array:
  """One key per row of the batch, folded from `rng` and the row's `index` in its split.

  Keys [B, 2]: the same example gets the same key whatever the batch size or its position in
  the batch (padding rows, index -1, get a key too and are masked later).
  """
  index = jnp.asarray(batch['index']).reshape(-1)
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)


def create_encoders(config: ml_collections.ConfigDict, spec: schema.DatasetSpec,
                    **overrides) -> encoders_lib.ModalityEncoders:
  """The `ModalityEncoders` of `config.method.encoders` over the dataset's modalities."""
  kwargs = {**config.method.encoders.to_dict(), **overrides}
  for key in ('kernel_sizes', 'mlp_hidden'):
    if key in kwargs:
      kwargs[key] = tuple(kwargs[key])
  if isinstance(kwargs.get('kinds'), list):
    kwargs['kinds'] = tuple(kwargs['kinds'])
  kwargs.setdefault('dtype', compute_dtype(config, config.method.get('name')))
  return encoders_lib.ModalityEncoders(modalities=tuple(spec.ordered_modalities()), **kwargs)


def supervised_loss(task: str, outputs: jax.Array, label: jax.Array) -> tuple[jax.Array, dict]:
  """Per-example task loss: cross-entropy (classification) or L1 (regression, as MMSA and IMDer).

  `outputs` are logits [..., C] or scores [..., 1] / [...]; aux holds per-example accuracy or
  absolute error for the training log. Computed in at least float32 (`full_precision`).
  """
  outputs = full_precision(outputs)
  if task == 'classification':
    loss = optax.softmax_cross_entropy_with_integer_labels(outputs, label.astype(jnp.int32))
    return loss, {'accuracy': (outputs.argmax(-1) == label).astype(jnp.float32)}
  pred = regression_output(outputs)
  err = jnp.abs(pred - label)
  return err, {'mae': err}


def regression_output(outputs: jax.Array) -> jax.Array:
  """[..., 1] -> [...]; scores are left as they are."""
  return outputs[..., 0] if outputs.ndim and outputs.shape[-1] == 1 else outputs


def task_output(task: str, outputs: jax.Array) -> jax.Array:
  """What `predict` returns for raw model outputs: logits as they are, regression scores [...],
  in at least float32."""
  outputs = full_precision(outputs)
  return outputs if task == 'classification' else regression_output(outputs)
