"""A training run killed with SIGKILL part way resumes from its workdir and ends exactly like an
uninterrupted run with the same seed (same selected checkpoint, same results.json).

Two runs: early fusion trained with missing patterns, and MMIN's two stages killed in stage 2
(stage 1 finished in `<workdir>/stage1`, the student, imagination nets and optimiser mid-training).
"""

import json
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest
import toy_data

REPO = pathlib.Path(__file__).resolve().parents[1]


COMMON = ['--config.data.batch_size=8', '--config.data.eval_batch_size=16', '--config.train.num_epochs=4',
          '--config.train.checkpoint_every_steps=5', '--config.eval.rates=(0.0,0.5)',
          '--config.method.embed_dim=16', '--config.method.num_filters=8']
RUNS = {
    'fusion': ['--config=configs/fusion_iemocap.py', '--config.train.missing=patterns',
               '--config.method.hidden=(16,)', '--config.optimizer.learning_rate=0.01'],
    'mmin': ['--config=configs/mmin_iemocap.py', '--config.method.stage1_epochs=2',
             '--config.method.stage1_constant_epochs=1', '--config.optimizer.constant_epochs=2',
             '--config.method.cra_blocks=2', '--config.method.cra_layers=(12,8,4)',
             '--config.method.classifier_hidden=(8,)', '--config.method.hidden=(8,)',
             '--config.optimizer.learning_rate=0.003'],
}


def _command(run, toy, data_dir, workdir):
  return ['-m', 'mmer_jax.main', *RUNS[run], f'--workdir={workdir}', f'--config.data.features_dir={toy}',
          f'--config.data.data_dir={data_dir}', *COMMON]


# Runs main, but SIGKILLs the process right after its second checkpoint save (mid-epoch) of the
# run in the workdir itself (saves of MMIN's stage 1, under <workdir>/stage1, do not count).
_KILLER = textwrap.dedent('''
    import os, signal, sys
    from absl import app
    from mmer_jax import checkpoint, main
    saves = []
    original = checkpoint.save
    def save_then_die(manager, step, *args, **kwargs):
      original(manager, step, *args, **kwargs)
      if 'stage1' not in str(manager.directory):
        saves.append(step)
      if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save = save_then_die
    sys.argv = ['main'] + sys.argv[1:]
    app.run(main.main)
''')


def _run(args, **kwargs):
  return subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True,
                        timeout=600, **kwargs)


@pytest.mark.parametrize('run', sorted(RUNS))
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, run):
  toy = toy_data.write_features_dir(tmp_path / 'toy', n=120, classes=4)
  data_dir = tmp_path / 'data'
  straight = _run(_command(run, toy, data_dir, tmp_path / 'straight'))
  assert straight.returncode == 0, straight.stderr[-3000:]

  workdir = tmp_path / 'killed'
  killed = _run(['-c', _KILLER] + _command(run, toy, data_dir, workdir)[2:])
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not (workdir / 'results.json').exists()
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints' / 'latest').iterdir() if p.name.isdigit())
  assert steps and steps[-1] % 5 == 0 and steps[-1] < 4 * 9, steps  # died part way, mid-epoch

  if run == 'mmin':  # killed in stage 2: stage 1 had finished
    assert (workdir / 'stage1' / 'results.json').exists()
  resumed = _run(_command(run, toy, data_dir, workdir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'resumed from step {steps[-1]}' in resumed.stderr

  a = json.loads((tmp_path / 'straight' / 'results.json').read_text())
  b = json.loads((workdir / 'results.json').read_text())
  assert a['selected_step'] == b['selected_step']
  assert [r['condition'] for r in a['rows']] == [r['condition'] for r in b['rows']]
  for ra, rb in zip(a['rows'], b['rows']):
    for k, v in ra['metrics'].items():
      assert abs(v - rb['metrics'][k]) < 1e-6, (ra['condition'], k, v, rb['metrics'][k])
