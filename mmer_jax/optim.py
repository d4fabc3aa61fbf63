"""The optax optimiser a config asks for: Adam/AdamW/SGD, schedules, clipping, weight decay, plateau.

Weight decay is applied, never silently dropped (MMIN's and IMDer's PyTorch code set it but their
optimisers ignore it): `decoupled` is AdamW's decay of the weights, `l2` adds `wd * w` to the
gradients before Adam (what `torch.optim.Adam(weight_decay=...)` does).
"""

from __future__ import annotations

import jax
import ml_collections
import optax

REST = '(rest)'  # the clipping group of the parameters no `clip_groups` entry names


def group_labels(groups):
  """A `multi_transform` label function: each leaf's first matching '/'-path in `groups`, or REST.

  Raises if a group names no parameter (a misspelt group would silently clip nothing).
  """
  groups = tuple(groups)

  def labels(params):
    used = set()

    def label(path, _):
      name = jax.tree_util.keystr(path, simple=True, separator='/')
      for group in groups:
        if name == group or name.startswith(group + '/'):
          used.add(group)
          return group
      return REST

    out = jax.tree_util.tree_map_with_path(label, params)
    unused = [g for g in groups if g not in used]
    if unused:
      raise ValueError(f'optimizer.clip_groups: {unused} name no parameter subtree')
    return out

  return labels


def clip_by_group_norm(max_norm: float, groups) -> optax.GradientTransformation:
  """Clips the gradient norm of each named subtree (and of the rest) to `max_norm` on its own."""
  return optax.multi_transform(
      {name: optax.clip_by_global_norm(max_norm) for name in (*groups, REST)}, group_labels(groups))


def create_learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int,
                         num_epochs: int) -> optax.Schedule:
  """Learning-rate schedule in steps; epochs in the config are turned into steps here."""
  base = config.learning_rate
  total = max(1, steps_per_epoch * num_epochs)
  warmup = steps_per_epoch * config.warmup_epochs
  if config.schedule == 'constant':
    main = optax.constant_schedule(base)
  elif config.schedule == 'linear_decay':
    # Constant for `constant_epochs`, then linearly to zero by the last step (MMIN's schedule).
    hold = steps_per_epoch * config.constant_epochs
    main = optax.join_schedules(
        [optax.constant_schedule(base),
         optax.linear_schedule(base, 0.0, max(1, total - warmup - hold))], [hold])
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(base, max(1, total - warmup))
  else:
    raise ValueError(f'optimizer.schedule: expected constant | linear_decay | cosine, got {config.schedule!r}')
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])
  return main


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int,
                     trainable_mask=None) -> optax.GradientTransformationExtraArgs:
  """The full gradient transformation; frozen parameters (mask False) never move."""
  lr = create_learning_rate(config, steps_per_epoch, num_epochs)
  parts = []
  if config.clip_value is not None:
    parts.append(optax.clip(config.clip_value))
  groups = tuple(config.get('clip_groups', ()) or ())
  if groups and config.clip_norm is None:
    raise ValueError('optimizer.clip_groups needs optimizer.clip_norm')
  if config.clip_norm is not None:
    parts.append(clip_by_group_norm(config.clip_norm, groups) if groups
                 else optax.clip_by_global_norm(config.clip_norm))
  wd = config.weight_decay
  if config.weight_decay_mode not in ('l2', 'decoupled'):
    raise ValueError(f'optimizer.weight_decay_mode: expected decoupled | l2, got {config.weight_decay_mode!r}')
  if wd and config.weight_decay_mode == 'l2':
    parts.append(optax.add_decayed_weights(wd))
  decoupled = wd if config.weight_decay_mode == 'decoupled' else 0.0
  if config.name in ('adam', 'adamw'):
    parts.append(optax.adamw(lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=decoupled))
  elif config.name == 'sgd':
    if decoupled:
      parts.append(optax.add_decayed_weights(decoupled))
    parts.append(optax.sgd(lr, momentum=config.b1 or None))
  else:
    raise ValueError(f'optimizer.name: expected adam | adamw | sgd, got {config.name!r}')
  if config.reduce_on_plateau:
    parts.append(optax.contrib.reduce_on_plateau(
        factor=config.plateau_factor, patience=config.plateau_patience,
        accumulation_size=steps_per_epoch))
  tx = optax.chain(*parts)
  if trainable_mask is not None:
    tx = optax.multi_transform({True: tx, False: optax.set_to_zero()}, trainable_mask)
  return optax.with_extra_args_support(tx)
