"""`python -m mmer_jax.benchmark`: one JSON line of step timings on a smoke config."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmer_jax import benchmark

REPO = pathlib.Path(__file__).resolve().parents[1]
REQUIRED_KEYS = ('compile_s', 'step_s_median', 'step_s_min', 'step_s_max', 'examples_per_s',
                 'eval_examples_per_s', 'peak_rss_mb', 'devices')


def run_cli(tmp_path, config: str, *extra: str, num_devices: int = 2, timeout: int = 300) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}')
  cmd = [sys.executable, '-m', 'mmer_jax.benchmark', f'--config={config}',
         f'--config.data.data_dir={tmp_path / "data"}', *extra]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, f'stdout must hold exactly one JSON line, got:\n{proc.stdout[-2000:]}'
  return json.loads(lines[0])


def check_report(report: dict, *, steps: int, devices: int):
  for key in REQUIRED_KEYS:
    assert key in report, key
    assert isinstance(report[key], (int, float)) and np.isfinite(report[key]), (key, report[key])
    assert report[key] > 0, (key, report[key])
  assert report['step_s_min'] <= report['step_s_median'] <= report['step_s_max']
  assert report['eval_step_s_median'] > 0
  assert report['timed_compiles'] == 0  # the timed steps reuse the compiled executables
  assert report['devices'] == devices
  assert report['steps'] == steps
  assert report['examples_per_s'] == pytest.approx(report['examples_per_step'] / report['step_s_median'])
  assert report['eval_examples_per_s'] == pytest.approx(
      report['eval_examples_per_step'] / report['eval_step_s_median'])


def test_cli_utterance_config(tmp_path):
  report = run_cli(tmp_path, 'configs/fusion_iemocap.py:smoke', '--steps', '3', '--warmup', '1',
                   f'--profile_dir={tmp_path / "profile"}')
  check_report(report, steps=3, devices=2)
  assert list((tmp_path / 'profile').rglob('perfetto_trace.json.gz')), 'no profiler trace written'
  assert report['config'] == 'configs/fusion_iemocap.py:smoke'
  assert report['level'] == 'utterance'
  assert report['batch_size'] == 8
  assert report['examples_per_step'] == 8  # utterance batches count their rows
  # Achieved GFLOP/s by default: XLA's FLOP count of each step over its median time.
  for prefix in ('train', 'eval'):
    assert report[f'{prefix}_gflop'] > 0, report
    assert report[f'{prefix}_gflops_per_s'] > 0, report
  assert report['train_gflops_per_s'] == pytest.approx(report['train_gflop'] / report['step_s_median'])
  assert report['eval_gflops_per_s'] == pytest.approx(report['eval_gflop'] / report['eval_step_s_median'])


def test_mmin_benchmark_times_the_training_step_with_cached_teacher_targets(tmp_path):
  # The timed state holds what training fits first: MMIN's tables of the frozen teacher's
  # embeddings (a step without them runs the teacher, about 30% slower).
  from configs import mmin_iemocap  # pylint: disable=g-import-not-at-top
  config = mmin_iemocap.get_config('smoke')
  config.data.data_dir = str(tmp_path / 'data')
  report = benchmark.benchmark(config, steps=1, warmup=0)
  assert 'teacher_tables' in report['param_groups'] and report['method'] == 'mmin'
  assert report['timed_compiles'] == 0


@pytest.mark.slow
def test_cli_dialogue_config_pmap(tmp_path):
  report = run_cli(tmp_path, 'configs/bclstm_iemocap.py:smoke', '--steps', '2', '--warmup', '0',
                   '--config.parallel=pmap')
  check_report(report, steps=2, devices=2)
  assert report['level'] == 'dialogue'
  assert report['parallel'] == 'pmap'


def test_compile_counter_counts_new_compilations_only():
  f = jax.jit(lambda x: x * 2 + 1)
  x, y = jnp.ones(5), jnp.ones(6)  # (creating arrays compiles too)
  with benchmark.CompileCounter() as first:
    f(x).block_until_ready()
  with benchmark.CompileCounter() as again:
    f(x).block_until_ready()
  with benchmark.CompileCounter() as new_shape:
    f(y).block_until_ready()
  assert (first.count, again.count, new_shape.count) == (1, 0, 1)


def test_timed_steps_may_not_touch_the_host():
  f = jax.jit(lambda x: x + 1)
  on_device = jnp.ones(3)
  _, _, compiles = benchmark._measure(lambda: f(on_device), warmup=0, steps=2)
  assert compiles == 0
  host = np.ones(3, np.float32)  # a step that feeds host data every call is a host round-trip
  with pytest.raises(Exception, match='(?i)disallowed'):
    benchmark._measure(lambda: f(host), warmup=0, steps=2)


def test_count_examples():
  utt = {'example_mask': np.array([True] * 5 + [False] * 3)}
  assert benchmark.count_examples(utt, 'utterance') == 8  # the device computes every row
  dia = {'example_mask': np.array([[True] * 4 + [False] * 4, [True] * 7 + [False]])}
  assert benchmark.count_examples(dia, 'dialogue') == 11  # valid turns only


def test_peak_rss_mb_is_plausible():
  mb = benchmark.peak_rss_mb()
  assert 10 < mb < 1024 * 1024


def test_benchmark_rejects_bad_counts():
  with pytest.raises(ValueError, match='steps'):
    benchmark.benchmark(None, steps=0)
  with pytest.raises(ValueError, match='warmup'):
    benchmark.benchmark(None, steps=1, warmup=-1)


@pytest.mark.parametrize('mode,dropped', [('drop_one', 1), ('drop_two', 2)])
def test_eval_batch_is_dropped_as_training_drops(mode, dropped):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({'train': {'missing': mode, 'missing_rate': 0.0}})
  full = np.ones((64, 3), bool)
  mask = benchmark.eval_modality_mask(config, full, np.ones(3, bool), 'train')
  np.testing.assert_array_equal((~mask).sum(1), dropped)
  assert len({tuple(r) for r in mask}) == 3  # which ones: drawn per sample
  np.testing.assert_array_equal(benchmark.eval_modality_mask(config, full, np.ones(3, bool), 'none'),
                                full)
  other = 'drop_two' if mode == 'drop_one' else 'drop_one'
  assert ((~benchmark.eval_modality_mask(config, full, np.ones(3, bool), other)).sum(1)
          == 3 - dropped).all()


def test_mmgcn_epochs_padding_and_unrolled_flops(tmp_path):
  """--epoch_repeats times every training dialogue once (sorted batches waste less padding than
  unsorted ones); --flops counts the fused GCN's scan unrolled (2 layers ~ twice the GCN of 1)."""
  reports = {}
  for grouping, depth in (('sorted', 2), ('none', 2), ('sorted', 1)):
    reports[grouping, depth] = run_cli(
        tmp_path, 'configs/mmgcn_iemocap.py:smoke', '--steps', '1', '--warmup', '0', '--flops',
        '--epoch_repeats=1', f'--config.data.length_grouping={grouping}',
        f'--config.method.num_layers={depth}', '--config.data.buckets=(16,32,48,64,96)', num_devices=1)
  sorted_, plain = reports['sorted', 2], reports['none', 2]
  for r in (sorted_, plain):
    epoch = r['train_epoch']
    assert epoch['examples'] == sum(map(sum, epoch['dialogue_turns']))
    assert sum(map(len, epoch['dialogue_turns'])) == 8  # the smoke training split, each once
    assert 0 <= epoch['padding_waste'] < 1 and r['rng_impl'] == 'threefry2x32'
    assert r['train_gflops_per_s'] == pytest.approx(r['train_gflop'] / r['step_s_median'])
  assert sorted(map(sorted, sorted_['train_epoch']['dialogue_turns'])) != sorted(
      map(sorted, plain['train_epoch']['dialogue_turns']))
  assert sorted_['train_epoch']['padding_waste'] <= plain['train_epoch']['padding_waste']
  # A layer more adds its propagation and P product (counted only when unrolled) besides its
  # h0 Q product (before the loop, counted either way): well over one [N, 100] x [100, 100] product.
  (batch, turns), = sorted_['eval_epoch']['shapes']
  one_product = 2 * batch * 3 * turns * 100 * 100
  added = (sorted_['eval_gflop'] - reports['sorted', 1]['eval_gflop']) * 1e9
  assert added > 1.5 * one_product, (added, one_product)
