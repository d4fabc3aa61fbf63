"""A training run killed with SIGKILL part way resumes from its workdir and ends exactly like an
uninterrupted run with the same seed (same selected checkpoint, same results.json)."""

import json
import pathlib
import signal
import subprocess
import sys
import textwrap

import toy_data

REPO = pathlib.Path(__file__).resolve().parents[1]


def _command(toy, data_dir, workdir):
  return ['-m', 'mmer_jax.main', '--config=configs/fusion_iemocap.py', f'--workdir={workdir}',
          f'--config.data.features_dir={toy}', f'--config.data.data_dir={data_dir}',
          '--config.data.batch_size=8', '--config.data.eval_batch_size=16', '--config.train.num_epochs=4',
          '--config.train.checkpoint_every_steps=5', '--config.train.missing=patterns',
          '--config.method.embed_dim=16', '--config.method.num_filters=8', '--config.method.hidden=(16,)',
          '--config.optimizer.learning_rate=0.01', '--config.eval.rates=(0.0,0.5)']


# Runs main, but SIGKILLs the process right after its second checkpoint save (mid-epoch).
_KILLER = textwrap.dedent('''
    import os, signal, sys
    from absl import app
    from mmer_jax import checkpoint, main
    saves = []
    original = checkpoint.save
    def save_then_die(*args, **kwargs):
      original(*args, **kwargs)
      saves.append(args[1])
      if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save = save_then_die
    sys.argv = ['main'] + sys.argv[1:]
    app.run(main.main)
''')


def _run(args, **kwargs):
  return subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True,
                        timeout=600, **kwargs)


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
  toy = toy_data.write_features_dir(tmp_path / 'toy', n=120)
  data_dir = tmp_path / 'data'
  straight = _run(_command(toy, data_dir, tmp_path / 'straight'))
  assert straight.returncode == 0, straight.stderr[-3000:]

  workdir = tmp_path / 'killed'
  killed = _run(['-c', _KILLER] + _command(toy, data_dir, workdir)[2:])
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not (workdir / 'results.json').exists()
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints' / 'latest').iterdir() if p.name.isdigit())
  assert steps and steps[-1] % 5 == 0 and steps[-1] < 4 * 9, steps  # died part way, mid-epoch

  resumed = _run(_command(toy, data_dir, workdir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'resumed from step {steps[-1]}' in resumed.stderr

  a = json.loads((tmp_path / 'straight' / 'results.json').read_text())
  b = json.loads((workdir / 'results.json').read_text())
  assert a['selected_step'] == b['selected_step']
  assert [r['condition'] for r in a['rows']] == [r['condition'] for r in b['rows']]
  for ra, rb in zip(a['rows'], b['rows']):
    for k, v in ra['metrics'].items():
      assert abs(v - rb['metrics'][k]) < 1e-6, (ra['condition'], k, v, rb['metrics'][k])
