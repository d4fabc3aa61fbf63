"""`train_and_evaluate(config, workdir)`: the training loop, generic over methods.

Trains with compiled steps, evaluates the validation split at each epoch end, keeps the best
checkpoint by `config.train.select_metric` (validation only), checkpoints the latest state every
`checkpoint_every_steps` and at each epoch end, resumes from the workdir after any interruption
with the same results as an uninterrupted run, and finally evaluates the selected checkpoint once
over the missing-modality grid of the test split.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from mmer_jax import checkpoint
from mmer_jax import evaluate
from mmer_jax import methods
from mmer_jax import optim
from mmer_jax import parallel
from mmer_jax import steps
from mmer_jax import writers
from mmer_jax.data import streams as streams_lib


class Run:
  """The pieces of one run a config describes: data, method, compiled steps, initial state."""

  def __init__(self, config: ml_collections.ConfigDict, *, devices=None, dataset=None):
    self.config = config
    self.dataset = dataset or streams_lib.load_dataset(config)
    self.spec = self.dataset.spec
    self.method = methods.create_method(config, self.spec)
    self.streams = streams_lib.Streams(config, self.dataset, level=self.method.level,
                                       needs_graph=self.method.needs_graph)
    self.mesh = parallel.create_mesh(devices)
    n = self.mesh.devices.size
    parallel.check_batch_size(config.data.batch_size, n)
    parallel.check_batch_size(config.data.eval_batch_size, n, 'data.eval_batch_size')
    self.steps_per_epoch = self.streams.num_batches('train', train=True)
    self.num_steps = self.steps_per_epoch * config.train.num_epochs
    if config.train.max_steps is not None:
      self.num_steps = min(self.num_steps, config.train.max_steps)
    self.train_step, self._eval_step, self.place = steps.compile_steps(self.method, config, self.mesh)

  def train_batches(self, epoch: int, start: int = 0):
    """The training batches of `epoch` from batch `start` on, with the method's host additions."""
    return map(self.method.train_batch, self.streams.epoch('train', epoch, train=True, start=start))

  def init_state(self, workdir: str | None = None) -> steps.TrainState:
    rng = jax.random.PRNGKey(self.config.seed)
    init_rng, state_rng = jax.random.split(rng)
    first = next(iter(self.streams.epoch('train', 0, train=True)))
    params = self.method.init(init_rng, first)
    params = self.method.prepare(params, self, workdir)
    tx = optim.create_optimizer(self.config.optimizer, self.steps_per_epoch,
                                self.config.train.num_epochs, self.method.trainable_mask(params))
    return steps.TrainState.create(params=params, tx=tx, rng=state_rng)

  # -- device placement -------------------------------------------------------------------------

  @property
  def is_pmap(self) -> bool:
    return self.config.parallel == 'pmap'

  def to_devices(self, state):
    if self.is_pmap:
      return parallel.stack_for_pmap(state, self.mesh.devices.size)
    return parallel.replicate(state, self.mesh)

  def from_devices(self, state):
    if self.is_pmap:
      return jax.tree_util.tree_map(lambda x: x[0], state)
    return state

  def predict(self, params, batch) -> np.ndarray:
    """Eval outputs of a host batch on the devices, back on the host in the batch's layout."""
    out = np.asarray(self._eval_step(params, self.place(batch)))
    if self.is_pmap:
      out = out.reshape((-1,) + out.shape[2:])
    return out

  def device_params(self, params):
    """Parameters placed for `predict`."""
    return self.to_devices(params)

  def eval_batches(self, split: str):
    return lambda: self.streams.epoch(split, train=False)

  def evaluate_split(self, params_on_device, split: str, conditions=('full',)) -> dict:
    """Metrics of `split`, pooled over the missing `conditions` (default: complete data)."""
    return evaluate.pooled_metrics(self.spec, self.predict, params_on_device,
                                   self.eval_batches(split), conditions)


def _is_better(value: float, best: float | None, mode: str) -> bool:
  if best is None:
    return True
  return value > best if mode == 'max' else value < best


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint), then writes the results grid."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config.to_dict(), f, indent=2, default=str)
  run = Run(config, devices=devices)
  latest_mgr, best_mgr = checkpoint.create_managers(workdir)
  state = run.init_state(workdir)
  meta: dict[str, Any] = {'best_metric': None, 'best_step': None, 'epoch_done': 0}
  restored = checkpoint.restore(latest_mgr, state.checkpoint_items())
  if restored is not None:
    state = state.restore_items(restored[0])
    meta = restored[1]
    logging.info('resumed from step %d', int(state.step))
  writer = writers.MetricWriter(workdir)
  tc = config.train
  step = int(state.step)
  progress = writers.Progress(run.num_steps, step)
  state = run.to_devices(state)
  select = tc.select_metric
  try:
    while step < run.num_steps:
      epoch, start = divmod(step, run.steps_per_epoch)
      for batch in run.train_batches(epoch, start):
        state, metrics = run.train_step(state, run.place(batch))
        metrics = jax.device_get(metrics)  # block on each step: no overlapping collectives
        if run.is_pmap:
          metrics = jax.tree_util.tree_map(lambda x: x[0], metrics)
        step += 1
        if step % tc.log_every_steps == 0 or step == run.num_steps:
          rate = progress(step, float(metrics['loss']))
          writer.write_scalars(step, {f'train/{k}': v for k, v in metrics.items()} | rate)
        end_of_epoch = step % run.steps_per_epoch == 0 or step == run.num_steps
        if step % tc.checkpoint_every_steps == 0 and not end_of_epoch:
          checkpoint.save(latest_mgr, step, run.from_devices(state).checkpoint_items(), meta)
        if step >= run.num_steps:
          break
      epoch_done = -(-step // run.steps_per_epoch)
      if epoch_done % tc.eval_every_epochs == 0 or step == run.num_steps:
        host_state = run.from_devices(state)
        valid = run.evaluate_split(run.device_params(host_state.params), 'valid',
                                   run.method.valid_conditions)
        valid = {f'valid/{k}': v for k, v in valid.items()}
        writer.write_scalars(step, valid)
        logging.info('epoch %d valid %s', epoch_done, {k: round(v, 4) for k, v in valid.items()})
        if select not in valid:
          raise ValueError(f'train.select_metric={select!r} is not a validation metric; '
                           f'expected one of {sorted(valid)}')
        if _is_better(valid[select], meta['best_metric'], tc.select_mode):
          meta = {**meta, 'best_metric': float(valid[select]), 'best_step': step}
          checkpoint.save(best_mgr, step, {'params': host_state.params}, meta)
      meta = {**meta, 'epoch_done': epoch_done}
      checkpoint.save(latest_mgr, step, run.from_devices(state).checkpoint_items(), meta)
  finally:
    writer.close()
  return evaluate_best(run, workdir, best_mgr=best_mgr, state=run.from_devices(state))


def evaluate_best(run: Run, workdir: str, *, best_mgr=None, state=None) -> dict:
  """Evaluates the selected (best-on-valid) checkpoint on the test grid; writes results files."""
  config = run.config
  if best_mgr is None:
    _, best_mgr = checkpoint.create_managers(workdir)
  if state is None:
    state = run.init_state(workdir)
  restored = checkpoint.restore(best_mgr, {'params': state.params})
  if restored is None:
    raise FileNotFoundError(f'{workdir}/checkpoints/best: no checkpoint; train first (--mode=train)')
  params, meta = restored[0]['params'], restored[1]
  logging.info('evaluating the checkpoint of step %s (valid %s = %s)', meta.get('best_step'),
               config.train.select_metric, meta.get('best_metric'))
  rows = evaluate.run_grid(run.spec, run.predict, run.device_params(params), run.eval_batches(config.eval.split),
                           conditions=config.eval.conditions, rates=config.eval.rates, seed=config.seed)
  results = evaluate.make_results(method=config.method.name, dataset=run.dataset.name, seed=config.seed,
                                  rows=rows, split=config.eval.split)
  if config.method.get('variant'):
    results['variant'] = config.method.variant
  results['selected_step'] = meta.get('best_step')
  results['valid_conditions'] = list(run.method.valid_conditions)
  results[f'valid_{config.train.select_metric.split("/")[-1]}'] = meta.get('best_metric')
  evaluate.write_results(workdir, results, run.spec.task)
  for path in run.method.write_figures(params, run, workdir):
    logging.info('wrote %s', path)
  logging.info('\n%s', evaluate.results_markdown(results, run.spec.task))
  return results
