"""Step-time benchmark of a config: compile time, train and eval step times, throughput, memory.

  python -m mmer_jax.benchmark --config=configs/fusion_iemocap.py:synthetic --steps 20

The second entry point of the library besides `mmer_jax.main` (and the only other module that
defines flags). It prints ONE JSON line on stdout (everything else goes to stderr). It measures
device compute, not the input pipeline: one host batch is placed on the devices once and fed to
every step. The timed steps run under `jax.transfer_guard('disallow')`, so a host round-trip
fails the benchmark instead of slowing it silently, and XLA compilations during them are counted
(`timed_compiles`, must be 0). `--profile_dir=DIR` also records the timed train steps.

The JSON fields and how examples are counted: docs/training.md#benchmark.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmer_jax import rng
from mmer_jax import stages
from mmer_jax import steps as steps_lib
from mmer_jax import train
from mmer_jax.data import grouping


def _timed(fn: Callable[[], Any]) -> float:
  """Seconds `fn()` takes, its outputs blocked until ready."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _missing_share(batch, available) -> float:
  """Share of the batch's (example or real turn, available modality) slots that are missing."""
  mask = np.asarray(batch['modality_mask'])[..., np.asarray(available, bool)]
  if mask.ndim == 3:  # dialogue batches: real turns only
    mask = mask[np.asarray(batch['turn_mask'], bool)]
  return float(1.0 - mask.mean())


def _turns(batch) -> list[int]:
  """Real turns of each real dialogue of a dialogue batch."""
  mask = np.asarray(batch['turn_mask'], bool)
  return [int(n) for n in mask.sum(axis=1) if n]


def count_examples(batch: dict, level: str) -> int:
  """Examples a batch stands for: utterance rows, or valid dialogue turns."""
  mask = np.asarray(batch['example_mask'])
  if level == 'dialogue':
    return int(mask.sum())
  return int(mask.shape[0])


def peak_rss_mb() -> float:
  """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / (1024.0 * 1024.0) if sys.platform == 'darwin' else peak / 1024.0


_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


class CompileCounter:
  """Counts XLA backend compilations while active (a `jax.monitoring` listener)."""

  def __init__(self):
    self.count = 0

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == _COMPILE_EVENT:
      self.count += 1

  def __enter__(self) -> 'CompileCounter':
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listen)


def _measure(fn: Callable[[], Any], *, warmup: int, steps: int,
             profile_dir: str | None = None) -> tuple[float, tuple[float, float, float], int]:
  """(first call incl. compilation, (median, min, max) of `steps` calls after `warmup` more,
  compilations during those timed calls). The timed calls may not transfer host <-> device."""
  first = _timed(fn)
  for _ in range(warmup):
    _timed(fn)
  trace = (jax.profiler.trace(profile_dir, create_perfetto_trace=True) if profile_dir
           else contextlib.nullcontext())
  with CompileCounter() as compiles, jax.transfer_guard('disallow'), trace:
    times = [_timed(fn) for _ in range(steps)]
  return first, _stats(times), compiles.count


def _stats(times: list[float]) -> tuple[float, float, float]:
  t = np.asarray(times, np.float64)
  return float(np.median(t)), float(t.min()), float(t.max())


def eval_modality_mask(config: ml_collections.ConfigDict, host_mask: np.ndarray, available,
                       eval_missing: str, seed: int = 0) -> np.ndarray:
  """The eval batch's modality mask under `eval_missing`: 'train' (the training missing mode,
  `config.train.missing`, drawn as the train step draws it), 'none' (as the data is), or a mode
  name of the train step (drop_one, drop_two, patterns, ...; rate uses the training rate)."""
  mode = config.train.missing if eval_missing == 'train' else eval_missing
  if mode == 'none':
    return host_mask
  drawn = steps_lib.training_modality_mask(
      jax.random.PRNGKey(seed), jnp.asarray(host_mask), missing_mode=mode,
      rate=steps_lib.training_rate(config), available=available)
  return np.asarray(drawn)


def cost_flops(cost) -> float | None:
  """The 'flops' of an XLA cost analysis (`Lowered/Compiled.cost_analysis()`; older jax: a list
  of one dict), or None where XLA gives none. The one reader of FLOP counts (device_check,
  benchmarks/imder_head_speed.py use it too)."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get('flops')
  return None if flops is None or flops < 0 else float(flops)


def step_flops(config: ml_collections.ConfigDict, run: train.Run, state, batch, params,
               eval_batch) -> tuple[float | None, float | None]:
  """XLA's FLOP counts of the train and eval steps, from the lowered (not compiled) HLO.

  XLA counts a loop's body once, so a method whose layers run as a `lax.scan` (MMGCN's fused
  GCN, `method.unroll`) is lowered fully unrolled for the count; the timed steps are not."""
  method = run.method
  if 'unroll' in config.method:
    unrolled = ml_collections.ConfigDict(config.to_dict())
    unrolled.method.unroll = True
    method = run.method.__class__(unrolled, run.spec)
  train_fn, eval_fn, _ = steps_lib.compile_steps(method, config, run.mesh)
  unwrap = lambda f: getattr(f, '__wrapped__', f)
  with jax.set_mesh(run.mesh):
    train_flops = cost_flops(unwrap(train_fn).lower(state, batch).cost_analysis())
    eval_flops = cost_flops(unwrap(eval_fn).lower(params, eval_batch, run.predict_rng).cost_analysis())
  return train_flops, eval_flops


def epoch_throughput(run: train.Run, step: Callable, batches: list, *, repeats: int,
                     level: str) -> dict[str, Any]:
  """Examples per second over whole epochs of host `batches` (placed on the devices first):
  every batch shape is compiled and run once untimed, then the epoch is timed `repeats` times
  (median). `step(device_batch)` runs one step and returns what to block on. Dialogue batches also report their padding
  waste, the share of turn slots that are padding."""
  placed = [run.place(b) for b in batches]
  seen = set()
  for b, d in zip(batches, placed):
    shape = np.asarray(b['example_mask']).shape
    if shape not in seen:
      seen.add(shape)
      _timed(lambda d=d: step(d))
  with jax.transfer_guard('disallow'):
    times = [_timed(lambda: [step(d) for d in placed]) for _ in range(repeats)]
  examples = sum(count_examples(b, level) for b in batches)
  median = float(np.median(times))
  out = {'batches': len(batches), 'examples': examples, 'epoch_s_median': median,
         'epoch_s_min': float(min(times)), 'examples_per_s': examples / median,
         'shapes': sorted(list(s) for s in seen), 'repeats': repeats}
  if level == 'dialogue':
    slots = sum(int(np.asarray(b['turn_mask']).size) for b in batches)
    out['padding_waste'] = 1.0 - examples / slots
    out['dialogue_turns'] = [_turns(b) for b in batches]
  return out


def benchmark(config: ml_collections.ConfigDict, *, steps: int = 20, warmup: int = 3,
              devices=None, run: train.Run | None = None,
              profile_dir: str | None = None, eval_missing: str = 'train',
              state=None, epoch_repeats: int = 0, flops: bool = False) -> dict[str, Any]:
  """Times the compiled train and eval steps of `config`; returns the JSON-able report.

  `state`: the state to start from (`run.init_state()`, made by the caller for something else
  too: it is donated to the first step), default a fresh `run.init_state()`. `epoch_repeats` > 0
  also times whole epochs (`epoch_throughput`: the training split's epoch 0 as the config batches
  it, and the eval split); `flops` adds XLA's FLOP counts and the GFLOP/s they give at the
  median step times (`step_flops`)."""
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}')
  if warmup < 0:
    raise ValueError(f'warmup must be >= 0, got {warmup}')
  setup_start = time.perf_counter()
  if run is None:
    config = stages.main_stage(config)
    run = train.Run(config, devices=devices)
  level = run.method.level

  # The state includes what the method fits on the training split (MMIN's teacher tables), so
  # the timed step is the step training runs.
  state = run.to_devices(run.init_state() if state is None else state)
  host_batch = next(iter(run.train_batches(0)))
  batch = run.place(host_batch)
  jax.block_until_ready(state)
  setup_s = time.perf_counter() - setup_start

  # Train step: the state is donated, so each step's output state feeds the next.
  def step():
    nonlocal state
    state, metrics = run.train_step(state, batch)
    return state, metrics

  compile_s, (step_median, step_min, step_max), train_compiles = _measure(
      step, warmup=warmup, steps=steps, profile_dir=profile_dir)
  train_examples = count_examples(host_batch, level)

  # Eval step on an eval-sized batch of the evaluation split, placed once.
  split = config.eval.split
  eval_host = dict(next(iter(run.streams.epoch(split, train=False))))
  eval_host['modality_mask'] = eval_modality_mask(config, np.asarray(eval_host['modality_mask']),
                                                  run.method.spec.available, eval_missing)
  if run.group_patterns:  # evaluation predicts in batches of one pattern (grouping.PatternBatcher)
    eval_host = grouping.as_one_pattern(eval_host, run.method.spec.available)
  eval_batch = run.place(eval_host)
  params = run.device_params(run.from_devices(state).eval_params)
  eval_fn = lambda: run._eval_step(params, eval_batch, run.predict_rng)  # pylint: disable=protected-access
  eval_compile_s, (eval_median, eval_min, eval_max), eval_compiles = _measure(
      eval_fn, warmup=warmup, steps=steps)
  eval_examples = count_examples(eval_host, level)

  extra = {}
  if flops:
    train_flops, eval_flops = step_flops(config, run, state, batch, params, eval_batch)
    extra.update(train_gflop=None if train_flops is None else train_flops / 1e9,
                 eval_gflop=None if eval_flops is None else eval_flops / 1e9,
                 train_gflops_per_s=None if train_flops is None else train_flops / step_median / 1e9,
                 eval_gflops_per_s=None if eval_flops is None else eval_flops / eval_median / 1e9)
  if epoch_repeats:
    def train_epoch_step(device_batch):
      nonlocal state
      state, metrics = run.train_step(state, device_batch)
      return metrics  # the state is donated to the next step: block on the metrics
    # Eval first: `params` may share the state's buffers, which the train steps donate.
    extra['eval_epoch'] = epoch_throughput(
        run, lambda d: run._eval_step(params, d, run.predict_rng),  # pylint: disable=protected-access
        list(run.streams.epoch(split, train=False)), repeats=epoch_repeats, level=level)
    extra['train_epoch'] = epoch_throughput(run, train_epoch_step, list(run.train_batches(0)),
                                            repeats=epoch_repeats, level=level)

  mesh_devices = list(run.mesh.devices.flat)
  turns = {}
  if level == 'dialogue':  # so that another implementation can be timed on the same dialogues
    turns = {'dialogue_turns': _turns(host_batch), 'eval_dialogue_turns': _turns(eval_host)}
  return {
      **turns,
      **extra,
      'compile_s': compile_s,
      'step_s_median': step_median,
      'step_s_min': step_min,
      'step_s_max': step_max,
      'examples_per_s': train_examples / step_median,
      'eval_compile_s': eval_compile_s,
      'eval_step_s_median': eval_median,
      'eval_step_s_min': eval_min,
      'eval_step_s_max': eval_max,
      'eval_examples_per_s': eval_examples / eval_median,
      'peak_rss_mb': peak_rss_mb(),
      'timed_compiles': train_compiles + eval_compiles,
      'devices': len(mesh_devices),
      'backend': jax.default_backend(),
      'device_kind': mesh_devices[0].device_kind,
      'parallel': config.parallel,
      'method': config.method.name,
      'dataset': run.dataset.name,
      'level': level,
      'batch_size': int(config.data.batch_size),
      'eval_batch_size': int(config.data.eval_batch_size),
      'examples_per_step': train_examples,
      'eval_examples_per_step': eval_examples,
      'eval_split': split,
      'eval_missing': config.train.missing if eval_missing == 'train' else eval_missing,
      'eval_missing_share': _missing_share(eval_host, run.method.spec.available),
      'batch_fields': sorted(host_batch),
      'param_groups': sorted(run.from_devices(state).params),
      'steps': steps,
      'warmup': warmup,
      'setup_s': setup_s,
  }


def _define_flags():
  """Flags of the CLI, defined only when run as a program (importing this module defines none)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config = config_flags.DEFINE_config_file('config', None, 'Config file (configs/<name>.py[:variant]).',
                                           lock_config=True)
  steps = flags.DEFINE_integer('steps', 20, 'Timed steps (train and eval each).')
  warmup = flags.DEFINE_integer('warmup', 3, 'Untimed steps after the first (compiling) one.')
  profile_dir = flags.DEFINE_string('profile_dir', None,
                                    'Also trace the timed train steps with jax.profiler into DIR.')
  flags.DEFINE_string('eval_missing', 'train',
                      'Modalities dropped from the timed eval batch: train (as '
                      'config.train.missing drops them in training), none, drop_one, drop_two, '
                      'patterns, rate.')
  flags.DEFINE_integer('epoch_repeats', 0, 'Also time whole epochs (train split, epoch 0, and the '
                       'eval split) this many times each; 0: off.')
  flags.DEFINE_bool('flops', True, "Report XLA's FLOP counts and GFLOP/s of the steps (one more "
                    'trace of each step; --noflops skips it).')
  flags.mark_flags_as_required(['config'])
  return config, steps, warmup, profile_dir


def main(argv, *, config_flag, steps_flag, warmup_flag, profile_flag):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from mmer_jax.data import schema  # pylint: disable=g-import-not-at-top
  config = config_flag.value
  report_impl = rng.configure(config)  # before any key is made
  try:
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout to the one JSON line
      report = benchmark(config, steps=steps_flag.value, warmup=warmup_flag.value,
                         profile_dir=profile_flag.value,
                         eval_missing=flags.FLAGS.eval_missing,
                         epoch_repeats=flags.FLAGS.epoch_repeats, flops=flags.FLAGS.flops)
  except schema.DataError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  report['config'] = config_flags.get_config_filename(flags.FLAGS['config'])
  report['rng_impl'] = report_impl
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  _config, _steps, _warmup, _profile = _define_flags()
  app.run(lambda argv: main(argv, config_flag=_config, steps_flag=_steps, warmup_flag=_warmup,
                            profile_flag=_profile))
