"""Two processes joined by `jax.distributed` (one CPU device each, coordinator on localhost) train
the smoke config data-parallel into one workdir, and end exactly like one process with two devices.

Each process is `python -m mmer_jax.main ... --coordinator_address=localhost:PORT --num_processes=2
--process_id=i`, as on two hosts (docs/scaling.md). Every subprocess is bounded by a deadline and
both processes are killed as soon as one fails, so a broken collective never hangs CI.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # per run (the pair together); about 2 minutes on two busy CPU cores

# The smoke config, with a smaller model and grid so that the three compilations stay quick.
ARGS = ['--config=configs/fusion_iemocap.py:smoke', '--config.method.encoders.embed_dim=16',
        '--config.method.encoders.num_filters=8', '--config.method.head.hidden=(16,)',
        "--config.eval.conditions=('full','a','vt')", '--config.eval.rates=(0.5,)']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = {k: v for k, v in os.environ.items()
         if not k.lower().endswith('_proxy') and k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  env['JAX_PLATFORMS'] = 'cpu'
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _run_all(commands: list[list[str]], env: dict, logs: pathlib.Path) -> None:
  """Runs the commands at once; fails (after killing the others) when one fails or the deadline
  passes, with the tail of every process's log."""
  logs.mkdir(parents=True, exist_ok=True)
  files = [open(logs / f'process_{i}.log', 'w', encoding='utf-8') for i in range(len(commands))]
  procs = [subprocess.Popen([sys.executable, '-m', 'mmer_jax.main', *c], cwd=REPO, env=env,
                            stdout=f, stderr=subprocess.STDOUT) for c, f in zip(commands, files)]
  deadline = time.monotonic() + TIMEOUT_S
  problem = None
  try:
    while any(p.poll() is None for p in procs):
      failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
      if failed:
        problem = f'process {failed[0]} exited with {procs[failed[0]].returncode}'
        break
      if time.monotonic() > deadline:
        problem = f'not finished after {TIMEOUT_S} s'
        break
      time.sleep(0.5)
    else:
      failed = [i for i, p in enumerate(procs) if p.returncode != 0]
      if failed:
        problem = f'process {failed[0]} exited with {procs[failed[0]].returncode}'
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for p in procs:
      p.wait()
    for f in files:
      f.close()
  if problem:
    tails = '\n'.join(f'--- process {i} (rc {p.returncode}):\n'
                      + (logs / f'process_{i}.log').read_text(encoding='utf-8')[-3000:]
                      for i, p in enumerate(procs))
    raise AssertionError(f'{problem}\n{tails}')


def _losses(workdir: pathlib.Path) -> dict[int, float]:
  lines = (workdir / 'metrics.jsonl').read_text(encoding='utf-8').splitlines()
  return {r['step']: r['train/loss'] for r in map(json.loads, lines) if 'train/loss' in r}


def _assert_same_results(got: dict, want: dict, atol: float = 1e-5) -> None:
  assert [r['condition'] for r in got['rows']] == [r['condition'] for r in want['rows']]
  for g, w in zip(got['rows'], want['rows']):
    assert g['metrics'].keys() == w['metrics'].keys()
    np.testing.assert_allclose([g['metrics'][k] for k in w['metrics']],
                               [w['metrics'][k] for k in w['metrics']], atol=atol,
                               err_msg=g['condition'])
    assert g['num_samples'] == w['num_samples']
  numbers = {k for k, v in want.items() if isinstance(v, float)}
  for key in numbers:
    np.testing.assert_allclose(got[key], want[key], atol=atol, err_msg=key)
  strip = lambda r: {k: v for k, v in r.items() if k not in numbers and k != 'rows'}  # noqa: E731
  assert strip(got) == strip(want)


def test_two_processes_match_one_process_on_two_devices(tmp_path):
  data_dir = tmp_path / 'data'  # built by process 0 while process 1 waits, then read by both
  port = _free_port()
  multi = tmp_path / 'two_processes'
  started = time.monotonic()
  _run_all([[*ARGS, f'--workdir={multi}', f'--config.data.data_dir={data_dir}',
             f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}']
            for i in range(2)], _env(1), tmp_path / 'logs_multi')
  multi_s = time.monotonic() - started
  single = tmp_path / 'one_process'
  _run_all([[*ARGS, f'--workdir={single}', f'--config.data.data_dir={data_dir}']], _env(2),
           tmp_path / 'logs_single')
  print(f'two processes: {multi_s:.0f} s; one process: {time.monotonic() - started - multi_s:.0f} s')

  log = (tmp_path / 'logs_multi' / 'process_1.log').read_text(encoding='utf-8')
  assert 'process 1 of 2; 1 local of 2 devices' in log, log[-2000:]
  got = json.loads((multi / 'results.json').read_text(encoding='utf-8'))
  want = json.loads((single / 'results.json').read_text(encoding='utf-8'))
  _assert_same_results(got, want)
  losses, want_losses = _losses(multi), _losses(single)
  assert sorted(losses) == sorted(want_losses) and len(losses) >= 6
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [want_losses[s] for s in sorted(losses)], rtol=1e-5, atol=1e-5)
  # One writer: the metrics once per logged step, no temporary files left behind.
  assert len((multi / 'metrics.jsonl').read_text(encoding='utf-8').splitlines()) == len(
      (single / 'metrics.jsonl').read_text(encoding='utf-8').splitlines())
  assert not list(multi.rglob('*.tmp'))
  assert sorted(p.name for p in (multi / 'checkpoints' / 'latest').iterdir()) == sorted(
      p.name for p in (single / 'checkpoints' / 'latest').iterdir())
