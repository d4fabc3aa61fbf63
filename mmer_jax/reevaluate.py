"""A finished run's selected checkpoint evaluated again with some config fields changed (a sampler,
its steps), at chosen rates of the test grid, without writing into the run (table analyses:
docs/compare.md#tables)."""

from __future__ import annotations

import os

import jax
import numpy as np

from mmer_jax import checkpoint
from mmer_jax import complexity
from mmer_jax import evaluate
from mmer_jax import stages as stages_lib
from mmer_jax import sweep
from mmer_jax import train


class Restored:
  """A run's final stage (its resolved config from `config.json`) and selected parameters."""

  def __init__(self, run_dir: str):
    config = stages_lib.resolve(complexity.load_config(os.path.join(run_dir, 'config.json')))
    final = stages_lib.plan(config, run_dir)[-1]
    self.config, self.workdir = stages_lib.main_stage(final.config), final.workdir
    _, best = checkpoint.create_managers(self.workdir)
    shapes = checkpoint.saved_params_shapes(best)
    if shapes is None:
      raise FileNotFoundError(f'{self.workdir}/checkpoints/best: no checkpoint to re-evaluate')
    target = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    self.params = checkpoint.restore(best, {'params': target})[0]['params']

  def metrics_at(self, rate: float, changes: dict | None = None) -> dict[str, float]:
    """Test metrics of the `rate=<rate>` grid row with `changes` ({dotted field: value}) set."""
    config = sweep.apply_overrides(self.config, changes or {})
    run = train.Run(config, devices=jax.devices()[:1], workdir=self.workdir)
    rows = evaluate.run_grid(run.spec, run.predict, run.device_params(self.params),
                             run.eval_batches(config.eval.split), conditions=(), rates=(rate,),
                             seed=config.seed, group_patterns=run.group_patterns)
    return {k: float(v) for k, v in rows[0]['metrics'].items()}
