"""Pure train and eval steps, generic over methods, and their compiled jit / pmap forms.

Only the parameters `method.trainable_mask` marks trainable are differentiated (and, under pmap,
all-reduced): frozen teachers and fitted tables cost nothing in the backward pass. With
`train.ema_decay` set, the state also carries an exponential moving average of the parameters,
which evaluation and model selection then use (`TrainState.eval_params`).

The loss of a step is `sum(per_example_loss * example_mask) / sum(example_mask)` over the *global*
batch, so one device, sharded jit and pmap (which `psum`s the numerator, the count and the
gradients) compute the same numbers. Random modality dropout for training is drawn for the global
batch from the step's key and sliced per device under pmap, for the same reason.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from mmer_jax import missing
from mmer_jax import parallel
from mmer_jax.methods import base


class TrainState(flax.struct.PyTreeNode):
  """Everything a step changes: parameters, optimiser state, step counter, base PRNG key, and
  optionally the EMA of the parameters (None when off)."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None
  tx: optax.GradientTransformationExtraArgs = flax.struct.field(pytree_node=False, default=None)
  ema_decay: float | None = flax.struct.field(pytree_node=False, default=None)
  # Which leaves (flattened order) evaluation takes from the EMA; None: all of them.
  ema_leaves: tuple[bool, ...] | None = flax.struct.field(pytree_node=False, default=None)

  @classmethod
  def create(cls, *, params, tx, rng, ema_decay: float | None = None, ema_mask=None):
    """`ema_mask`: optional pytree of bools like `params`, the leaves evaluation takes from the
    EMA (e.g. only IMDer's score networks, which sample); the others evaluate as trained."""
    ema = jax.tree_util.tree_map(jnp.array, params) if ema_decay is not None else None
    leaves = None
    if ema_mask is not None:
      leaves = tuple(bool(f) for f in jax.tree_util.tree_structure(params).flatten_up_to(ema_mask))
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng,
               ema_params=ema, tx=tx, ema_decay=ema_decay, ema_leaves=leaves)

  def apply_gradients(self, grads, **extra_args):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params, **extra_args)
    params = optax.apply_updates(self.params, updates)
    ema = self.ema_params
    if self.ema_decay is not None:
      ema = optax.incremental_update(params, ema, step_size=1.0 - self.ema_decay)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, ema_params=ema)

  @property
  def eval_params(self):
    """The parameters evaluation uses: the EMA when kept (of the `ema_leaves`), else the current."""
    if self.ema_params is None:
      return self.params
    if self.ema_leaves is None:
      return self.ema_params
    current, treedef = jax.tree_util.tree_flatten(self.params)
    averaged = jax.tree_util.tree_leaves(self.ema_params)
    return jax.tree_util.tree_unflatten(treedef, [e if f else p for p, e, f in zip(
        current, averaged, self.ema_leaves)])

  def checkpoint_items(self) -> dict:
    items = {'step': self.step, 'params': self.params, 'opt_state': self.opt_state, 'rng': self.rng}
    if self.ema_params is not None:
      items['ema_params'] = self.ema_params
    return items

  def restore_items(self, items: dict) -> 'TrainState':
    return self.replace(**items)


def partition(params, mask) -> tuple[list, list, Any]:
  """(trainable leaves, frozen leaves, (treedef, mask leaves)) of `params` under a bool mask."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  flags = treedef.flatten_up_to(mask)
  return ([x for x, f in zip(leaves, flags) if f], [x for x, f in zip(leaves, flags) if not f],
          (treedef, flags))


def combine(trainable: list, frozen: list, structure) -> Any:
  """Inverse of `partition`."""
  treedef, flags = structure
  t, f = iter(trainable), iter(frozen)
  return jax.tree_util.tree_unflatten(treedef, [next(t) if flag else next(f) for flag in flags])


DROP_COUNTS = {'drop_one': 1, 'drop_two': 2}


def training_modality_mask(rng, batch_mask: jax.Array, *, missing_mode: str, rate,
                           available, num_shards: int = 1, shard_index=0,
                           global_mask: jax.Array | None = None) -> jax.Array:
  """The modality mask a training batch is seen with (the batch's own mask AND a random drop).

  Masks are drawn for the global batch (`num_shards` x local rows) and this shard's slice is kept;
  `rate` is one rate or [3] per modality, and a rate draw keeps one of each sample's own
  modalities, for which it needs the global batch's masks (`global_mask`, default `batch_mask`).
  """
  if missing_mode == 'none':
    return batch_mask
  lead = batch_mask.shape[:-1]
  local = math.prod(lead)
  n = local * num_shards
  if missing_mode == 'rate':
    own = (batch_mask if global_mask is None else global_mask).reshape(n, -1)
    own = jnp.where(own.any(-1, keepdims=True), own, jnp.asarray(available, bool))  # padding rows
    drawn = missing.missing_rate_mask(rng, n, rate, available=available, sample_available=own)
  elif missing_mode in ('patterns', 'patterns_and_full'):
    drawn = missing.random_pattern_mask(rng, n, available=available,
                                        include_full=missing_mode == 'patterns_and_full')
  elif missing_mode in DROP_COUNTS:
    drawn = missing.drop_count_mask(rng, n, DROP_COUNTS[missing_mode], available=available)
  else:
    raise ValueError(f'train.missing: expected none | patterns | patterns_and_full | rate | '
                     f'drop_one | drop_two, got {missing_mode!r}')
  drawn = jax.lax.dynamic_slice_in_dim(drawn, shard_index * local, local, axis=0)
  return batch_mask & drawn.reshape(batch_mask.shape)


def batch_training_mask(rng, batch: dict, **kwargs) -> jax.Array:
  """The mask a training batch is seen with: its own AND the host-drawn `train_mask` where the
  batch carries one (`train.mask_draw`, data/grouping.py), else `training_modality_mask`'s draw."""
  if 'train_mask' in batch:
    return batch['modality_mask'] & batch['train_mask']
  return training_modality_mask(rng, batch['modality_mask'], **kwargs)


def weighted_loss(loss_fn: Callable, params, batch: dict, rng, count):
  """The scalar training objective: masked per-example losses summed and divided by `count`.

  `loss_fn(params, batch, rng) -> (per_example, aux)` is a method's `loss` (or `gradcheck_loss`).
  """
  weight = batch['example_mask'].astype(jnp.float32)
  per_example, aux = loss_fn(params, batch, rng)
  loss = (per_example * weight).sum() / count
  return loss, {k: (v * weight).sum() / count for k, v in aux.items()}


def train_step(state: TrainState, batch: dict, *, method: base.Method, missing_mode: str = 'none',
               rate=0.0, axis_name: str | None = None, num_shards: int = 1):
  """One optimiser step; returns the new state and step metrics (global means)."""
  rng = jax.random.fold_in(state.rng, state.step)
  mask_rng, loss_rng = jax.random.split(rng)
  shard = jax.lax.axis_index(axis_name) if axis_name else 0
  batch = dict(batch)
  batch['observed_mask'] = batch['modality_mask']  # what the data has, before the random drop
  global_mask = None
  if axis_name and missing_mode == 'rate' and 'train_mask' not in batch:
    global_mask = jax.lax.all_gather(batch['modality_mask'], axis_name, axis=0, tiled=True)
  batch['modality_mask'] = batch_training_mask(
      mask_rng, batch, missing_mode=missing_mode, rate=rate, available=method.spec.available,
      num_shards=num_shards, shard_index=shard, global_mask=global_mask)
  # A sample left with no modality (its data lacks what the drawn pattern keeps) is not trained on.
  batch['example_mask'] = batch['example_mask'] & batch['modality_mask'].any(-1)
  weight = batch['example_mask'].astype(jnp.float32)
  count = weight.sum()
  if axis_name:
    count = jax.lax.psum(count, axis_name)
  count = jnp.maximum(count, 1.0)
  trainable, frozen, structure = partition(state.params, method.trainable_mask(state.params))

  def loss_fn(trainable):
    params = combine(trainable, frozen, structure)
    return weighted_loss(method.loss, params, batch, loss_rng, count)

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
  if axis_name:
    grads, loss, aux = jax.lax.psum((grads, loss, aux), axis_name)
  grad_norm = optax.global_norm(grads)
  grads = combine(grads, [jnp.zeros_like(x) for x in frozen], structure)
  state = state.apply_gradients(grads, value=loss)
  metrics = {'loss': loss, **aux, 'grad_norm': grad_norm}
  return state, metrics


def eval_step(params, batch: dict, rng, *, method: base.Method):
  """Eval-mode outputs of a batch (the caller applies `example_mask`)."""
  return method.predict(params, batch, rng)


def training_rate(config):
  """`train.missing_rates` ('a:0.1,v:0.5,t:0.0', as a tuple in MODALITIES order) when set, else
  the one `train.missing_rate`."""
  rates = config.train.get('missing_rates')
  if rates:
    return tuple(float(r) for r in missing.parse_rates(rates))
  return config.train.missing_rate


def compile_steps(method: base.Method, config, mesh) -> tuple[Callable, Callable, Callable]:
  """(train_step, eval_step, place_batch) compiled for `config.parallel` on `mesh`."""
  missing_mode, rate = config.train.missing, training_rate(config)
  n = mesh.devices.size
  if config.parallel == 'jit':
    # Sharded inputs and replicated state: jit propagates the shardings, the state is donated.
    train = jax.jit(functools.partial(train_step, method=method, missing_mode=missing_mode, rate=rate),
                    donate_argnums=(0,))
    evaluate = jax.jit(functools.partial(eval_step, method=method))
    return (parallel.under_mesh(train, mesh), parallel.under_mesh(evaluate, mesh),
            lambda b: parallel.shard_batch(b, mesh))
  if config.parallel == 'pmap':
    devices = list(mesh.devices.flat)
    train = jax.pmap(functools.partial(train_step, method=method, missing_mode=missing_mode, rate=rate,
                                       axis_name=parallel.AXIS, num_shards=n),
                     axis_name=parallel.AXIS, devices=devices, donate_argnums=(0,))
    evaluate = jax.pmap(functools.partial(eval_step, method=method), axis_name=parallel.AXIS,
                        in_axes=(0, 0, None), devices=devices)
    return train, evaluate, lambda b: parallel.split_for_pmap(b, n)
  raise ValueError(f"parallel: expected 'jit' or 'pmap', got {config.parallel!r}")
