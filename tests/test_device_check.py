"""benchmarks/device_check.py, the ready GPU check (docs/device_check.md), rehearsed on the CPU.

Most checks need no JAX computation: the cases' configs and overrides, the authors' commands built
from our lines, the timeout of a hung sub-process, and that the carried wheels plus the GPU
machines' packages cover every dependency in pyproject.toml. Two run the script as the device call
does, on one `:smoke` case (about 25 s) and without the GPU it expects (exit code 3). The full
rehearsal (every case, the warm phase, the authors' code) takes 7 to 11 minutes here and is not a
test: docs/device_check.md gives its command and output.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import time
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import device_check  # noqa: E402  pylint: disable=wrong-import-position


def _norm(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def test_every_dependency_is_carried_or_on_the_gpu_machines():
  deps = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
  names = {_norm(re.split(r'[\s<>=!~\[;]', d)[0]) for d in deps}
  machine = {_norm(line.strip()) for line in (ROOT / 'benchmarks/device_packages.txt').read_text().splitlines()
             if line.strip() and not line.startswith('#')}
  script = (ROOT / 'benchmarks/device_wheels.sh').read_text()
  carried = {_norm(m) for m in re.findall(r'^\s+([A-Za-z0-9_.-]+)==', script, re.M)}
  assert names - machine - carried == set(), 'add the wheel to benchmarks/device_wheels.sh'
  assert 'tensorflow-datasets' in carried and 'jraph' in carried


@pytest.mark.parametrize('name', list(device_check.CASES))
def test_cases_build_their_configs(name):
  case = device_check.CASES[name]
  for variant, rehearse in (('synthetic', False), ('smoke', True)):
    overrides = dict(case.get('overrides', {}))
    if rehearse:
      overrides.update(case.get('rehearse', {}))
    config = device_check.load_config(case['config'], variant, overrides)
    for key, value in overrides.items():
      node = config
      for part in key.split('.'):
        node = node[part]
      assert node == value
    batch = config.data.batch_size
    device_check.shrink(config, smoke=rehearse)
    assert config.data.eval_batch_size == batch
    if not rehearse and config.data.name.endswith(('iemocap_4', 'mosi', 'mosei')):
      assert config.data.options.sizes['train'] == 4 * batch


def test_papers_batch_sizes():
  sizes = {name: device_check.load_config(c['config'], 'synthetic', c.get('overrides', {})).data.batch_size
           for name, c in device_check.CASES.items()}
  assert sizes['mmin_iemocap'] == 128 and sizes['imder_mosi'] == 32 and sizes['imder_mosei'] == 128
  assert sizes['mmgcn_iemocap_d4'] == sizes['mmgcn_iemocap_d64'] == 16


def test_authors_commands():
  opts = device_check.parse(['--authors_dir=/nowhere', '--authors_repo_mmgcn=/x/mmgcn', '--steps=4',
                             '--authors_device=cuda'])
  assert opts.authors_repos == {'mmgcn': '/x/mmgcn'} and opts.expect_gpu
  ours = {'batch_size': 16, 'dataset': 'synthetic/iemocap_6', 'dialogue_turns': [3, 5],
          'eval_dialogue_turns': [4], 'overrides': {'method.num_layers': 64}}
  cmd = device_check.authors_command('mmgcn', '/x/mmgcn', ours, opts)
  assert cmd[1].endswith('authors_mmgcn_step.py')
  assert {'--depths=64', '--turns=3,5', '--eval_turns=4', '--device=cuda', '--steps=4'} <= set(cmd)
  report = {'train_depth64': {'median': 2.0}, 'infer_depth64': {'median': 0.5}}
  assert device_check.authors_times('mmgcn', report, ours) == (2.0, 0.5)
  imder = device_check.authors_command('imder', '/x/imder', {'batch_size': 128, 'dataset': 'synthetic/mosei'},
                                       device_check.parse(['--rehearse']))
  assert {'--dataset=mosei', '--batch=128', '--cases=drop_one', '--device=auto'} <= set(imder)
  assert f'--num_steps={device_check.REHEARSE_AUTHORS_SAMPLER_STEPS}' in imder
  mmin = device_check.authors_command('mmin', '/x/mmin', {'batch_size': 128}, opts)
  assert '--batch=128' in mmin


def test_options():
  assert device_check.parse([]).steps == 10 and device_check.parse(['--quick']).steps == 3
  rehearse = device_check.parse(['--rehearse'])
  assert rehearse.steps == 2 and not rehearse.expect_gpu
  assert device_check.parse(['--rehearse', '--expect_gpu=1']).expect_gpu
  with pytest.raises(SystemExit):
    device_check.parse(['--cases=nope'])


def test_a_hung_process_is_killed_at_its_timeout(tmp_path, monkeypatch):
  monkeypatch.setenv('OUT', str(tmp_path))
  check = device_check.Check(device_check.parse(['--rehearse']))
  start = time.time()
  rc, lines, _ = check.run('sleeper', [sys.executable, '-c', 'print("{\\"a\\": 1}", flush=True); '
                                       'import time; time.sleep(60)'], timeout=2)
  assert rc is None and lines == [{'a': 1}] and time.time() - start < 30
  check.emit({'kind': 'ours', 'case': 'x', 'precision': 'float32', 'device_kind': 'cpu', 'batch_size': 8,
              'compile_s': 1.0, 'step_s_median': 0.01, 'eval_step_s_median': 0.005, 'examples_per_s': 800.0})
  check.emit({'kind': 'ratio', 'case': 'x', 'precision': 'float32', 'authors_train_s': 0.02,
              'authors_infer_s': 0.01, 'train_ratio': 2.0, 'infer_ratio': 2.0})
  assert '| x | float32 | cpu | 8 | 1.0 | 10.00 | 5.00 | 800 |  | 20.00 | 2.00x | 10.00 | 2.00x |' in check.table()
  written = [json.loads(l) for l in (tmp_path / 'device_check.jsonl').read_text().splitlines()]
  assert [l['kind'] for l in written] == ['ours', 'ratio']


def _rehearse(tmp_path, *args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'OUT': str(tmp_path / 'out')}
  out = subprocess.run([sys.executable, str(ROOT / 'benchmarks/device_check.py'), '--rehearse',
                        f'--data_dir={tmp_path / "tfds"}', *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
  lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith('{')]
  written = [json.loads(l) for l in (tmp_path / 'out/device_check.jsonl').read_text().splitlines()]
  assert written == lines, out.stderr[-3000:]
  return out, lines


def test_rehearsal_one_case(tmp_path):
  """The path of the device call on one case, float32: about 25 s here with a cold XLA cache."""
  out, lines = _rehearse(tmp_path, '--cases=fusion_iemocap', '--precisions=float32')
  assert out.returncode == 0, out.stderr[-3000:]
  assert [l['kind'] for l in lines] == ['env', 'ours', 'summary']
  ours = lines[1]
  assert ours['backend'] == 'cpu' and ours['timed_compiles'] == 0 and ours['train_gflop'] > 0
  assert (tmp_path / 'out/device_check.md').exists()


def test_rehearsal_expects_a_gpu(tmp_path):
  """Without a GPU, --expect_gpu=1 stops after the env line, exit code 3."""
  out, lines = _rehearse(tmp_path, '--expect_gpu=1', '--cases=fusion_iemocap')
  assert out.returncode == 3 and [l['kind'] for l in lines] == ['env']
  assert lines[0]['gpu_ok'] is False
