"""`python -m mmer_jax.data`: builds a dataset and prints one JSON summary; errors go to stderr."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'mmer_jax.data', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_features_dir_summary(shared_data_dir, tmp_path):
  proc = _cli('--dataset=features_dir', f'--features_dir={shared_data_dir / "meld_text"}',
              f'--data_dir={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['splits'] == {'train': {'examples': 9989, 'dialogues': 1038},
                           'valid': {'examples': 1109, 'dialogues': 114},
                           'test': {'examples': 2610, 'dialogues': 280}}
  assert out['task'] == 'classification' and len(out['labels']) == 7
  assert list(out['modalities']) == ['text'] and out['modalities']['text']['shape'] == [384]


def test_synthetic_summary(tmp_path):
  proc = _cli('--dataset=synthetic/mosi', f'--data_dir={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert {s: v['examples'] for s, v in out['splits'].items()} == {'train': 1284, 'valid': 229, 'test': 686}
  assert all(v['dialogues'] is None for v in out['splits'].values())
  assert out['task'] == 'regression' and out['label_range'] == [-3.0, 3.0]
  assert out['modalities']['audio']['shape'] == [None, 5]
  assert out['modalities']['text']['shape'] == [None, 768]


def test_failure_exits_nonzero_with_the_error_on_stderr(tmp_path):
  proc = _cli('--dataset=mosei', f'--data_dir={tmp_path}', f'--manual_dir={tmp_path / "nothing"}')
  assert proc.returncode != 0
  assert 'aligned_50.pkl' in proc.stderr and proc.stdout.strip() == ''
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'meta.json').write_text('{"name": "x"')
  proc = _cli('--dataset=features_dir', f'--features_dir={bad}', f'--data_dir={tmp_path}')
  assert proc.returncode != 0 and 'meta.json' in proc.stderr
