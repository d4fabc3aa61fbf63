"""Stages as data: resolving a config into the complete configs that run, and `init_from`.

A config may list earlier stages in `config.stages`: name -> the fields in which that stage
differs from the main config (MMIN: `stage1` is the full-modality early-fusion model with its own
optimiser). The main config runs last, as stage `config.stage_name`. `resolve` turns a config
into what actually runs:

  1. each method's `resolve_config` sets the fields its variant implies (methods/__init__.py);
  2. each stage becomes a complete config: the main config's fields (all but `stages`,
     `init_from`, `analysis`), updated with the stage's own, and resolved in turn.

`init_from` = {stage, workdir, params}: restore the parameter subtrees `params` (a map
destination -> source, '/'-separated paths) from the best checkpoint of an earlier stage (`stage`,
in `<workdir>/<stage>/`) or of any finished run (`workdir`). `train.train_and_evaluate` runs the
stages in order, each in `<workdir>/<name>/`; a config without stages runs in `<workdir>` itself.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from mmer_jax import analysis
from mmer_jax import checkpoint
from mmer_jax import methods

# Fields a stage does not take from the main config.
NOT_INHERITED = ('stages', 'init_from', 'analysis', 'stage_name')


def empty_init_from() -> ml_collections.ConfigDict:
  """`config.init_from` that restores nothing."""
  return ml_collections.ConfigDict({
      'stage': config_dict.placeholder(str), 'workdir': config_dict.placeholder(str),
      'params': ml_collections.ConfigDict()})


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The complete, resolved config that runs (a locked copy; `config` is not changed).

  A resolved config says so (`config.resolved`) and is returned as it is.
  """
  config = copy.deepcopy(config)
  if config.get('resolved'):
    return config
  config.unlock()
  config = methods.resolve_config(config)
  stages = ml_collections.ConfigDict()
  for name, delta in config.stages.items():
    if name == config.stage_name:
      raise ValueError(f'config.stages.{name}: a stage cannot share the main stage name '
                       f'(config.stage_name={config.stage_name!r})')
    stage = copy.deepcopy(config)
    if 'resolved' in stage:
      del stage['resolved']
    for field in NOT_INHERITED:
      del stage[field]
    stage.stages = ml_collections.ConfigDict()
    stage.init_from = empty_init_from()
    stage.analysis = ()
    stage.stage_name = name
    stage.update(delta.to_dict())
    stages[name] = resolve(stage)
  config.stages = stages
  init = config.init_from
  if init.stage is not None and init.stage not in config.stages:
    raise ValueError(f'config.init_from.stage={init.stage!r}: no such earlier stage; expected one '
                     f'of {sorted(config.stages)}')
  if init.stage is not None and init.workdir is not None:
    raise ValueError('config.init_from: set stage (an earlier stage) or workdir (a finished run), '
                     'not both')
  for name in config.analysis:
    analysis.get_analysis(name)  # an unknown figure fails now, not after training
  config.resolved = True
  config.lock()
  return config


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  config: ml_collections.ConfigDict  # complete and resolved; init_from.workdir set for a stage
  workdir: str


def plan(config: ml_collections.ConfigDict, workdir: str) -> list[Stage]:
  """The stages of a resolved config in running order, each with its own workdir.

  A config without stages is one stage in `workdir` itself; otherwise every stage, the main
  one last, runs in `<workdir>/<name>/`, and `init_from.stage` becomes that stage's workdir.
  """
  if not config.stages:
    return [Stage(config.stage_name, config, workdir)]
  out = []
  for name, stage_config in [*config.stages.items(), (config.stage_name, config)]:
    stage_config = copy.deepcopy(stage_config)
    with stage_config.unlocked():
      if name == config.stage_name:
        stage_config.stages = ml_collections.ConfigDict()  # the earlier stages ran on their own
      if stage_config.init_from.stage is not None:
        stage_config.init_from.workdir = os.path.join(workdir, stage_config.init_from.stage)
    out.append(Stage(name, stage_config, os.path.join(workdir, name)))
  return out


def is_finished(workdir: str) -> bool:
  """A stage is finished once its results table is written (the last thing a run does)."""
  return os.path.exists(os.path.join(workdir, 'results.json'))


def _get(tree: Any, path: str, where: str):
  node = tree
  for key in path.split('/'):
    if not isinstance(node, dict) or key not in node:
      have = sorted(node) if isinstance(node, dict) else type(node).__name__
      raise KeyError(f'{where}: no parameter subtree {path!r} (at {key!r}: have {have})')
    node = node[key]
  return node


def _set(tree: dict, path: str, value) -> dict:
  keys = path.split('/')
  if len(keys) == 1:
    return {**tree, keys[0]: value}
  return {**tree, keys[0]: _set(tree[keys[0]], '/'.join(keys[1:]), value)}


def apply_init_from(params: dict, init_from: ml_collections.ConfigDict) -> dict:
  """`params` with the subtrees `init_from.params` restored from `init_from.workdir`'s best
  checkpoint; each must match the shapes of the subtree it replaces. Nothing without a workdir.
  """
  source = init_from.workdir
  mapping = init_from.params.to_dict()
  if source is None or not mapping:
    return params
  if not is_finished(source):
    raise FileNotFoundError(f'init_from.workdir={source}: not a finished run (no results.json); '
                            'train it first')
  _, best = checkpoint.create_managers(source)
  restored = checkpoint.restore_params(best)
  if restored is None:
    raise FileNotFoundError(f'{source}/checkpoints/best: no checkpoint to initialise from')
  shapes = lambda t: jax.tree_util.tree_map(lambda x: (tuple(x.shape), str(x.dtype)), t)  # noqa: E731
  for dest, src in mapping.items():
    value = _get(restored, src, f'{source} (init_from.params.{dest})')
    expected = _get(params, dest, 'this run')
    if shapes(value) != shapes(expected):
      raise ValueError(f'init_from: {source}:{src} does not fit this run\'s {dest} '
                       f'(the encoder settings must agree): {shapes(value)} vs {shapes(expected)}')
    params = _set(params, dest, jax.tree_util.tree_map(jnp.array, value))  # own buffers each
  return params


def main_stage(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The resolved main stage alone, as `train.Run` takes it: no earlier stages, nothing restored
  (benchmarks, gradient checks and tests start it from its own initialisation)."""
  config = copy.deepcopy(resolve(config))
  with config.unlocked():
    config.stages = ml_collections.ConfigDict()
    config.init_from = empty_init_from()
  return config
