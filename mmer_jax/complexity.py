"""Model complexity of a finished run: trainable parameters, FLOPs per example, step time, memory.

  report = complexity.measure(complexity.load_config('runs/x/config.json'), run_dir='runs/x')

What `python -m mmer_jax.compare` reports per entry: `params_trainable` (from the best
checkpoint's metadata, or a fresh `Run.init_state()`), `params_total`, `flops_per_example` (XLA's
cost analysis of the compiled train step over the batch's examples), `memory_bytes` (XLA's buffer
assignment of that step) and the rest of `benchmark.benchmark`'s report. Everything runs on ONE
device (the first of `jax.devices()`), whatever mesh the run trained on, so that runs trained on
different hosts are comparable. `memory_bytes` is per step, so it is the memory column to compare.

The columns: docs/compare.md#complexitymd.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from mmer_jax import benchmark as benchmark_lib
from mmer_jax import checkpoint
from mmer_jax import stages
from mmer_jax import train


def _tuples(value: Any) -> Any:
  """`value` with every JSON list turned into a tuple (configs hold tuples: conditions, rates,
  encoder widths), dicts recursively."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def load_config(path: str) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to `config.json` (`train.write_config`), as a ConfigDict.

  JSON turned its tuples into lists; they are tuples again. Unset placeholders come back as plain
  None fields, which every reader of a config accepts."""
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def best_checkpoint_dir(run_dir: str, config: ml_collections.ConfigDict) -> str:
  """The directory whose `checkpoints/best` holds the run's final model: the run itself, or the
  main stage's directory `<run>/<stage_name>` of a staged run (MMIN)."""
  return os.path.join(run_dir, config.stage_name) if config.stages else run_dir


def checkpoint_shapes(run_dir: str, config: ml_collections.ConfigDict) -> Any | None:
  """Shapes of the best checkpoint's params (metadata only), or None when it has none. Nothing
  is created: orbax's managers would make the directory, so its absence is checked first."""
  workdir = best_checkpoint_dir(run_dir, config)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints', 'best')):
    return None
  _, best = checkpoint.create_managers(workdir)
  return checkpoint.saved_params_shapes(best)


def count_parameters(params: Any, trainable_mask: Any) -> tuple[int, int]:
  """(trainable, total) element counts of a parameter tree (arrays or ShapeDtypeStructs), the
  trainable ones selected by a pytree of bools of the same structure."""
  sizes = [math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)]
  mask = jax.tree_util.tree_leaves(trainable_mask)
  if len(mask) != len(sizes):
    raise ValueError(f'trainable mask has {len(mask)} leaves, the params {len(sizes)}')
  return int(sum(s for s, m in zip(sizes, mask) if m)), int(sum(sizes))


def _cost(compiled) -> dict:
  """XLA's cost analysis of a compiled computation as one dict (older jax: a list of one)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def memory_bytes(compiled) -> dict[str, int]:
  """The buffers XLA assigned to a compiled computation: arguments, outputs, temporaries,
  aliased (outputs living in donated arguments), and `total` = arguments + outputs - aliased +
  temporaries, the device memory one call needs."""
  stats = compiled.memory_analysis()
  fields = {k: int(getattr(stats, f'{k}_size_in_bytes')) for k in ('argument', 'output', 'alias', 'temp')}
  fields['total'] = fields['argument'] + fields['output'] - fields['alias'] + fields['temp']
  return fields


def compile_train_step(run: train.Run, state, batch):
  """The train step of `run` compiled for `state` and a placed `batch` (not executed). The
  step is traced under the run's mesh, as `parallel.under_mesh` calls it in training."""
  step = getattr(run.train_step, '__wrapped__', run.train_step)  # the jit/pmap under the mesh
  with jax.set_mesh(run.mesh):
    return step.lower(state, batch).compile()


def measure(config: ml_collections.ConfigDict, *, run_dir: str | None = None, steps: int = 3,
            warmup: int = 1) -> dict[str, Any]:
  """The complexity report of a run's config (module docstring) on one device: parameter counts,
  FLOPs per example and memory of the compiled train step, then `benchmark.benchmark`'s timings
  over `steps` timed steps after `warmup` untimed ones."""
  shapes = checkpoint_shapes(run_dir, config) if run_dir else None  # before the stages are dropped
  config = stages.main_stage(config)
  run = train.Run(config, devices=jax.devices()[:1])
  state = run.init_state() if shapes is None else run.abstract_state(shapes)
  params = shapes if shapes is not None else state.params
  trainable, total = count_parameters(params, run.method.trainable_mask(params))

  host_batch = next(iter(run.train_batches(0)))
  compiled = compile_train_step(run, run.to_devices(state), run.place(host_batch))
  del state
  examples = benchmark_lib.count_examples(host_batch, run.method.level)
  flops = _cost(compiled).get('flops')
  memory = memory_bytes(compiled)
  del compiled

  timings = benchmark_lib.benchmark(config, steps=steps, warmup=warmup, run=run)
  return {
      'params_trainable': trainable,
      'params_total': total,
      'params_from': 'checkpoint' if shapes is not None else 'init',
      'flops_per_step': None if flops is None else float(flops),
      'flops_per_example': None if flops is None else float(flops) / examples,
      'memory_bytes': memory,
      **{k: timings[k] for k in ('compile_s', 'step_s_median', 'step_s_min', 'step_s_max',
                                 'examples_per_s', 'eval_step_s_median', 'eval_examples_per_s',
                                 'examples_per_step', 'peak_rss_mb', 'backend', 'device_kind',
                                 'steps', 'warmup')},
  }
