"""`train_and_evaluate(config, workdir)`: a config's stages in order, each a `Run` (data, method,
compiled steps, state) trained by the one loop (`loop.py`, with `RunDriver`: one member) and
then evaluated once, the selected checkpoint over the test split's missing-modality grid.

Resolved configs are written to `<workdir>/config.json`; finished stages are skipped and an
interrupted one resumes to the uninterrupted result. Several processes (`jax.distributed`) run
the same loop in step on the same global batches; process 0 alone writes files, and builds the
dataset and feature statistics first. Details: docs/training.md, docs/scaling.md."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmer_jax import analysis
from mmer_jax import checkpoint
from mmer_jax import diagnostics
from mmer_jax import evaluate
from mmer_jax import loop
from mmer_jax import methods
from mmer_jax import metrics as metrics_lib
from mmer_jax import missing
from mmer_jax import optim
from mmer_jax import parallel
from mmer_jax import stages as stages_lib
from mmer_jax import steps
from mmer_jax import writers
from mmer_jax.data import schema
from mmer_jax.data import standardize
from mmer_jax.data import streams as streams_lib

# Folded into the seed's key for the evaluation key `predict` gets.
_PREDICT_SALT = 0x7072


class Run:
  """The pieces of one stage a resolved config describes: data, method, compiled steps, state."""

  def __init__(self, config: ml_collections.ConfigDict, *, devices=None, dataset=None,
               workdir: str | None = None):
    """`workdir`: where the run keeps what it fitted on its data (the feature statistics), so
    a resumed run and a later evaluation read them back; None fits them afresh."""
    if config.stages:
      raise ValueError('train.Run runs one stage; this config lists stages '
                       f'{sorted(config.stages)}: use train.train_and_evaluate')
    if config.parallel == 'pmap' and jax.process_count() > 1:
      raise ValueError(f"parallel='pmap' runs in one process; this job has {jax.process_count()} "
                       "(jax.distributed): use parallel='jit' (the default)")
    self.config = config
    # Process 0 first: it builds the dataset and stores the statistics, the others read them.
    self.dataset = dataset or parallel.first_process_first(
        lambda: streams_lib.load_dataset(config), 'load_dataset')
    self.spec = self.dataset.spec
    self.method = methods.create_method(config, self.spec)
    self.feature_stats = parallel.first_process_first(
        lambda: standardize.for_run(config, self.dataset, workdir), 'feature_stats')
    self.mesh = parallel.create_mesh(devices)
    n = self.mesh.devices.size
    # A graph method builds one graph per device (`Method.host_batch`).
    self.streams = streams_lib.Streams(config, self.dataset, level=self.method.level,
                                       host_batch=functools.partial(self.method.host_batch, num_shards=n),
                                       feature_stats=self.feature_stats)
    parallel.check_batch_size(config.data.batch_size, n)
    parallel.check_batch_size(config.data.eval_batch_size, n, 'data.eval_batch_size')
    # Host-grouped masks (`train.mask_draw`) give epochs of different lengths; otherwise equal.
    self.epoch_ends = np.cumsum(self.streams.epoch_sizes(config.train.num_epochs))
    self.num_steps = int(self.epoch_ends[-1]) if len(self.epoch_ends) else 0
    self.steps_per_epoch = max(1, -(-self.num_steps // max(1, config.train.num_epochs)))  # mean
    if config.train.max_steps is not None:
      self.num_steps = min(self.num_steps, config.train.max_steps)
    self.train_step, self._eval_step, self.place = steps.compile_steps(self.method, config, self.mesh)
    self.predict_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), _PREDICT_SALT)
    # Evaluation in batches of one missing pattern, where the method asks for it (IMDer).
    self.group_patterns = self.method.groups_patterns and self.method.level == 'utterance'

  def epoch_position(self, step: int) -> tuple[int, int]:
    """(epoch, batch within it) of the next step after `step` steps."""
    epoch = int(np.searchsorted(self.epoch_ends, step, side='right'))
    return epoch, step - (int(self.epoch_ends[epoch - 1]) if epoch else 0)

  def epochs_done(self, step: int) -> int:
    """Epochs begun by `step` steps (a partial last one counts)."""
    return 0 if step <= 0 else int(np.searchsorted(self.epoch_ends, step, side='left')) + 1

  def is_epoch_end(self, step: int) -> bool:
    return step in self.epoch_ends or step == self.num_steps

  def train_batches(self, epoch: int, start: int = 0):
    """The training batches of `epoch` from batch `start` on (the method's host hook applied)."""
    return self.streams.epoch('train', epoch, train=True, start=start)

  def _optimizer(self, params):
    return optim.create_optimizer(self.config.optimizer, self.steps_per_epoch,
                                  self.config.train.num_epochs, self.method.trainable_mask(params))

  def init_params(self) -> Any:
    """Fresh parameters: `init`, then `init_from`, then the method's `fit` on the training split."""
    init_rng, _ = jax.random.split(jax.random.PRNGKey(self.config.seed))
    first = next(iter(self.streams.epoch('train', 0, train=True)))
    params = self.method.init(init_rng, first)
    params = stages_lib.apply_init_from(params, self.config.init_from)
    return self.method.fit(params, self.eval_batches('train'))

  def init_state(self, params=None) -> steps.TrainState:
    """A fresh state (`params`, or `init_params()`)."""
    if params is None:
      params = self.init_params()
    _, state_rng = jax.random.split(jax.random.PRNGKey(self.config.seed))
    return steps.TrainState.create(params=params, tx=self._optimizer(params), rng=state_rng,
                                   ema_decay=self.config.train.ema_decay,
                                   ema_mask=self.method.ema_mask(params))

  def abstract_state(self, params_shapes) -> steps.TrainState:
    """A state shaped like saved parameters (zeros), to restore a checkpoint into: a resumed run
    neither initialises from another run nor refits anything."""
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), params_shapes)
    return self.init_state(zeros)

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
    out = np.asarray(parallel.to_host(self._eval_step(params, self.place(batch), self.predict_rng)))
    if self.is_pmap:
      out = out.reshape((-1,) + out.shape[2:])
    return out

  def device_params(self, params):
    """Parameters placed for `predict`."""
    return self.to_devices(params)

  def eval_batches(self, split: str):
    return lambda: self.streams.epoch(split, train=False)

  def evaluate_split(self, params_on_device, split: str, conditions=('full',),
                     with_outputs: bool = False):
    """Metrics of `split`, pooled over the missing `conditions` (default: complete data);
    with `with_outputs`, also the pooled (outputs, labels, mask) they were computed from."""
    outputs, labels, mask = evaluate.pooled_outputs(self.spec, self.predict, params_on_device,
                                                    self.eval_batches(split), conditions,
                                                    group_patterns=self.group_patterns)
    result = metrics_lib.compute(self.spec.task, outputs, labels, mask)
    return (result, (outputs, labels, mask)) if with_outputs else result

  @property
  def valid_conditions(self) -> tuple[str, ...]:
    """The method's model-selection conditions that this dataset can express."""
    return tuple(evaluate.condition_names(self.spec, self.method.valid_conditions))


selection = loop.selection  # where the loop and results.json read it


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if not parallel.is_main_process():
    return
  os.makedirs(workdir, exist_ok=True)
  writers.write_atomic(os.path.join(workdir, 'config.json'),
                       json.dumps(config.to_dict(), indent=2, default=str))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None,
                       stage: str | None = None) -> dict:
  """Runs the config's stages in order (or only `stage`); returns the last one's results.

  Finished stages are skipped, an interrupted one resumes. With stages, `<workdir>/results.json`
  (and .md) is the final stage's table, copied from `<workdir>/<stage_name>/`.
  """
  config = stages_lib.resolve(config)
  write_config(config, workdir)
  parallel.check_shared_directory(workdir)
  plan = stages_lib.plan(config, workdir)
  names = [s.name for s in plan]
  if stage is not None and stage not in names:
    raise ValueError(f'--stage={stage}: this config has stages {names}')
  results = None
  for index, s in enumerate(plan):
    if stage is not None and s.name != stage:
      continue
    if len(plan) > 1 and stages_lib.is_finished(s.workdir) and s.name != stage:
      logging.info('stage %s: finished in %s, skipped', s.name, s.workdir)
      with open(os.path.join(s.workdir, 'results.json'), encoding='utf-8') as f:
        results = json.load(f)
      continue
    source = s.config.init_from.workdir
    if source and s.config.init_from.stage and not stages_lib.is_finished(source):
      raise FileNotFoundError(f'stage {s.name} starts from stage {s.config.init_from.stage}, which '
                              f'has not finished in {source}: run it first')
    logging.info('stage %s in %s', s.name, s.workdir)
    if len(plan) > 1:
      write_config(s.config, s.workdir)
    later = [t.config for t in plan[index + 1:]] if stage is None else []
    results = train_stage(s.config, s.workdir, devices=devices, later=later,
                          name=f'stage {s.name}' if len(plan) > 1 else '')
  if len(plan) > 1 and (stage is None or stage == plan[-1].name) and parallel.is_main_process():
    publish_final_results(plan, workdir)
  return results


def publish_final_results(plan: list[stages_lib.Stage], workdir: str) -> None:
  """A staged run's table: its final stage's results.json / .md, copied (atomically) to `workdir`."""
  for name in ('results.json', 'results.md'):
    with open(os.path.join(plan[-1].workdir, name), encoding='utf-8') as f:
      writers.write_atomic(os.path.join(workdir, name), f.read())


def _later_steps(run: Run, later: list[ml_collections.ConfigDict]) -> int:
  """An estimate of the train steps of the stages after `run`'s: their epochs over this stage's
  training split at their batch size, capped by their `max_steps` (early stopping may end them
  sooner), for the run's ETA."""
  total = 0
  for c in later:
    per_epoch = max(1, round(run.steps_per_epoch * run.config.data.batch_size / c.data.batch_size))
    steps = per_epoch * c.train.num_epochs
    total += steps if c.train.max_steps is None else min(steps, c.train.max_steps)
  return total


def train_stage(config: ml_collections.ConfigDict, workdir: str, *, devices=None,
                later: list[ml_collections.ConfigDict] = (), name: str = '') -> dict:
  """Trains one stage (resuming from `workdir` if it holds a checkpoint), then the test grid.

  `later`: the configs of the stages that follow (the run's ETA); `name`: the stage's, on its
  log lines."""
  tc = config.train
  progress = writers.Progress(0, every_steps=tc.log_every_steps, every_s=tc.get('log_every_seconds'),
                              name=name, first_step=loop.FIRST_STEP).start()
  try:
    return _train_stage(config, workdir, devices, later, progress)
  finally:
    progress.close()


class RunDriver:
  """The loop's driver (`loop.Driver`) for one run: one member, jit or pmap, several hosts."""

  def __init__(self, run: Run, workdir: str, latest_mgr, best_mgr):
    self.run, self.latest_mgr, self.best_mgr = run, latest_mgr, best_mgr
    self.config, self.spec, self.num_steps = run.config, run.spec, run.num_steps
    self.names, self.member_dirs = [''], [workdir]
    self.valid_conditions = run.valid_conditions
    self.epoch_position, self.epochs_done = run.epoch_position, run.epochs_done
    self.is_epoch_end, self.batches = run.is_epoch_end, run.train_batches

  def describe(self) -> str:
    return (f'{self.run.steps_per_epoch} a epoch, batch {self.config.data.batch_size} on '
            f'{self.run.mesh.devices.size} device(s)')

  def train_step(self, state, batch):
    state, metrics = self.run.train_step(state, self.run.place(batch))
    metrics = parallel.to_host(metrics)  # block on each step: no overlapping collectives
    if self.run.is_pmap:
      metrics = jax.tree_util.tree_map(lambda x: x[0], metrics)
    return state, {k: np.asarray(v)[None] for k, v in metrics.items()}

  def validate(self, state):
    self._validated = self.run.from_devices(state).eval_params  # what save_best writes
    valid, pooled = self.run.evaluate_split(self.run.device_params(self._validated), 'valid',
                                            self.valid_conditions, with_outputs=True)
    return [(valid, pooled)]

  def save_best(self, i, step, state, member):
    checkpoint.save(self.best_mgr, step, {'params': self._validated}, member.meta())

  def save_latest(self, step, state, members):
    checkpoint.save(self.latest_mgr, step, self.run.from_devices(state).checkpoint_items(),
                    members[0].meta())


def _train_stage(config, workdir, devices, later, progress: writers.Progress) -> dict:
  progress.activity(f'loading {config.data.name} and building {config.method.name}')
  run = Run(config, devices=devices, workdir=workdir)
  progress.total, progress.later_steps = run.num_steps, _later_steps(run, list(later))
  progress.at_most = bool(config.train.get('patience'))
  latest_mgr, best_mgr = checkpoint.create_managers(workdir)
  saved = checkpoint.saved_params_shapes(latest_mgr)
  meta = None
  if saved is None:
    progress.activity('initialising the parameters (init, init_from, fit on the training split)')
    state = run.init_state()
  else:
    progress.activity('restoring the latest checkpoint')
    target = run.abstract_state(saved)
    items, meta = checkpoint.restore(latest_mgr, target.checkpoint_items())
    state = target.restore_items(items)
    logging.info('resumed from step %d', int(state.step))
  member = loop.Member.from_meta(meta, config.train.get('patience'))
  step = int(state.step)
  progress.reset_window(step)
  parallel.check_same_on_processes(state, 'the initial (or restored) state')
  state = run.to_devices(state)
  writer = writers.for_process(workdir, parallel.is_main_process())
  try:
    loop.train_members(RunDriver(run, workdir, latest_mgr, best_mgr), state, step, [member],
                       progress=progress, metric_writers=[writer])
  finally:
    writer.close()
  if member.diverged:
    loop.write_diverged(workdir, member)
    raise diagnostics.TrainingDiverged(member.diverged)
  return evaluate_stage(run, workdir, best_mgr=best_mgr, warnings=member.warnings,
                        progress=progress)


def evaluate_best(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> dict:
  """Re-evaluates a trained run's selected checkpoint (its final stage) on the test grid."""
  config = stages_lib.resolve(config)
  plan = stages_lib.plan(config, workdir)
  final = plan[-1]
  results = evaluate_stage(Run(final.config, devices=devices, workdir=final.workdir), final.workdir)
  if len(plan) > 1 and parallel.is_main_process():
    evaluate.write_results(workdir, results, results['task'])
  return results


def evaluate_stage(run: Run, workdir: str, *, best_mgr=None, warnings=None,
                   progress: writers.Progress | None = None, predict=None) -> dict:
  """Evaluates the selected (best-on-valid) checkpoint on the test grid; writes results files.

  `warnings`: what training flagged (default: those recorded with the selected checkpoint);
  `progress`: where the grid's rows are reported (default: the log); `predict`: instead of
  `run.predict` (a sweep member's, from the group's compiled program)."""
  config = run.config
  if progress is not None:
    progress.activity('restoring the selected checkpoint', log=False)
  if best_mgr is None:
    _, best_mgr = checkpoint.create_managers(workdir)
  shapes = checkpoint.saved_params_shapes(best_mgr)
  if shapes is None:
    raise FileNotFoundError(f'{workdir}/checkpoints/best: no checkpoint; train first (--mode=train)')
  target = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  restored, meta = checkpoint.restore(best_mgr, {'params': target})
  params = restored['params']
  logging.info('evaluating the checkpoint of step %s (%s = %s)', meta.get('best_step'),
               selection(config, run.spec)[0], meta.get('best_metric'))
  noise_fractions, noise_snr_db = evaluate.configured_noise(config.eval)
  split = config.eval.split
  report = progress.activity if progress is not None else logging.info
  rows = evaluate.run_grid(run.spec, predict or run.predict, run.device_params(params),
                           run.eval_batches(split), conditions=config.eval.conditions,
                           rates=config.eval.rates, seed=config.seed, noise_fractions=noise_fractions,
                           noise_snr_db=noise_snr_db, report=lambda row: report(f'{split} {row}'),
                           group_patterns=run.group_patterns)
  results = evaluate.make_results(method=config.method.name, dataset=run.dataset.name, seed=config.seed,
                                  rows=rows, split=split)
  if config.method.get('variant'):
    results['variant'] = config.method.variant
  results['task'] = run.spec.task
  results['train_missing'] = config.train.missing
  if config.train.missing == 'rate':
    rate = steps.training_rate(config)
    if isinstance(rate, tuple):
      results['train_missing_rates'] = missing.rates_name(rate)
      results['train_missing_fractions'] = dict(zip(
          schema.MODALITIES, missing.effective_missing_fractions(rate, run.spec.available).tolist()))
    else:
      results['train_missing_rate'] = float(rate)
  select, _ = selection(config, run.spec)
  results['selected_step'] = meta.get('best_step')
  results['selected_on'] = select
  results['valid_conditions'] = list(run.valid_conditions)
  results[f'valid_{select.split("/")[-1]}'] = meta.get('best_metric')
  results['standardized'] = run.feature_stats is not None
  warnings = meta.get('warnings', []) if warnings is None else warnings
  if warnings:
    results['warnings'] = list(warnings)
  if parallel.is_main_process():
    evaluate.write_results(workdir, results, run.spec.task)
    for path in analysis.run_all(config.analysis, run, params, workdir):
      logging.info('wrote %s', path)
  elif config.analysis:
    # An analysis may predict (collectives every process takes part in): the others run it too,
    # into a scratch directory that is then removed.
    with tempfile.TemporaryDirectory() as scratch:
      analysis.run_all(config.analysis, run, params, scratch)
  logging.info('\n%s', evaluate.results_markdown(results, run.spec.task))
  return results
