"""A training run killed with SIGKILL part way resumes from its workdir and ends exactly like an
uninterrupted run with the same seed (same selected checkpoint, same results.json).

Five kills: early fusion trained with missing patterns, and with host-drawn masks in one-pattern
batches (epochs of different lengths); MMGCN on dialogues of different lengths in length-sorted
batches (`data.length_grouping='sorted'`); MMIN's two stages killed in stage 1
(mid-epoch, nothing of stage `mmin` yet); and killed in stage `mmin` (stage 1 finished, the
student, imagination nets, fitted teacher tables and optimiser mid-training, and the resumed run
must not refit the tables).
"""

import json
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import toy_data

REPO = pathlib.Path(__file__).resolve().parents[1]


COMMON = ['--config.data.batch_size=8', '--config.data.eval_batch_size=16', '--config.train.num_epochs=4',
          '--config.train.checkpoint_every_steps=5', '--config.eval.rates=(0.0,0.5)']
_ENCODERS = ['--config.method.encoders.embed_dim=16', '--config.method.encoders.num_filters=8']
_MMIN = ['--config=configs/mmin_iemocap.py', '--config.stages.stage1.train.num_epochs=2',
         '--config.stages.stage1.optimizer.constant_epochs=1', '--config.optimizer.constant_epochs=2',
         '--config.method.cra.num_blocks=2', '--config.method.cra.layers=(12,8,4)',
         '--config.method.classifier.hidden=(8,)', '--config.method.head.hidden=(8,)',
         '--config.optimizer.learning_rate=0.003', '--config.analysis=()', *_ENCODERS]
RUNS = {
    'fusion': ['--config=configs/fusion_iemocap.py', '--config.train.missing=patterns',
               '--config.method.head.hidden=(16,)', '--config.optimizer.learning_rate=0.01',
               *_ENCODERS],
    # Masks drawn on the host, batches of one pattern: epochs of different lengths.
    'fusion_grouped': ['--config=configs/fusion_iemocap.py', '--config.train.missing=rate',
                       '--config.train.mask_draw=host_grouped', '--config.method.head.hidden=(16,)',
                       '--config.optimizer.learning_rate=0.01', *_ENCODERS],
    # 8 steps per epoch of 2 dialogues (lengths 2-9 turns), sorted into two buckets.
    'mmgcn_sorted': ['--config=configs/mmgcn_iemocap.py', '--config.data.length_grouping=sorted',
                     '--config.data.buckets=(4,10)', '--config.method.width=16',
                     '--config.method.gcn_hidden=16', '--config.method.num_layers=2',
                     '--config.train.missing=rate', '--config.analysis=()'],
    'mmin_stage1': _MMIN,
    'mmin': _MMIN,
}
# Which stage's directory the kill watches ('' = the workdir itself), and the steps of one epoch.
KILLED_IN = {'fusion': '', 'fusion_grouped': '', 'mmgcn_sorted': '', 'mmin_stage1': 'stage1',
             'mmin': 'mmin'}
DIALOGUE_LENGTHS = (2, 9, 3, 7, 4, 5)  # turns, cycled: MMGCN's toy dialogues


def _command(run, toys, data_dir, workdir):
  dialogues = run.startswith('mmgcn')
  toy = toys['dialogues' if dialogues else 'utterances']
  # Batches of 2 dialogues (MMGCN) or 8 utterances; COMMON's 8 comes first, the run's size after.
  size = ['--config.data.batch_size=2', '--config.data.eval_batch_size=4'] if dialogues else []
  return ['-m', 'mmer_jax.main', *RUNS[run], f'--workdir={workdir}', f'--config.data.features_dir={toy}',
          f'--config.data.data_dir={data_dir / ("dialogues" if dialogues else "utterances")}',
          *COMMON, *size]


# Runs main, but SIGKILLs the process right after the second checkpoint save (mid-epoch) of the
# stage in `sys.argv[1]` (the directory right above its checkpoints/).
_KILLER = textwrap.dedent('''
    import os, pathlib, signal, sys
    from absl import app
    from mmer_jax import checkpoint, main
    watched = pathlib.Path(sys.argv[1]).resolve()
    saves = []
    original = checkpoint.save
    def save_then_die(manager, step, *args, **kwargs):
      original(manager, step, *args, **kwargs)
      if pathlib.Path(str(manager.directory)).resolve().parents[1] == watched:
        saves.append(step)
      if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save = save_then_die
    sys.argv = ['main'] + sys.argv[2:]
    app.run(main.main)
''')


def _run(args, **kwargs):
  return subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True,
                        timeout=600, **kwargs)


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
  """One toy dataset for every case, and each distinct uninterrupted run trained once."""
  root = tmp_path_factory.mktemp('resume')
  toy = {'utterances': toy_data.write_features_dir(root / 'toy', n=120, classes=4),
         'dialogues': toy_data.write_features_dir(root / 'toy_dialogues', n=90, classes=4,
                                                  dialogues=True, turns=DIALOGUE_LENGTHS)}
  straight = {}

  def uninterrupted(run):
    key = tuple(RUNS[run])
    if key not in straight:
      workdir = root / f'straight_{len(straight)}'
      proc = _run(_command(run, toy, root / 'data', workdir))
      assert proc.returncode == 0, proc.stderr[-3000:]
      straight[key] = json.loads((workdir / 'results.json').read_text())
    return straight[key]

  return toy, root / 'data', uninterrupted


# Killed in stage 1 of a staged run: the single-stage resumption (fusion) plus stage order;
# with -m slow, to keep the default run within CI's time.
@pytest.mark.parametrize('run', [pytest.param(r, marks=pytest.mark.slow) if r == 'mmin_stage1' else r
                                 for r in sorted(RUNS)])
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, shared, run):
  toy, data_dir, uninterrupted = shared
  a = uninterrupted(run)

  workdir = tmp_path / 'killed'
  watched = workdir / KILLED_IN[run]
  killed = _run(['-c', _KILLER, str(watched)] + _command(run, toy, data_dir, workdir)[2:])
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not (workdir / 'results.json').exists() and not (watched / 'results.json').exists()
  steps = sorted(int(p.name) for p in (watched / 'checkpoints' / 'latest').iterdir() if p.name.isdigit())
  if run in ('fusion_grouped', 'mmgcn_sorted'):  # the second save may be an epoch's end
    assert steps and steps[-1] < 4 * 9, steps
  else:
    assert steps and steps[-1] % 5 == 0 and steps[-1] < 4 * 9, steps  # died part way, mid-epoch

  if run == 'mmin':  # killed in stage mmin: stage 1 had finished, the tables were fitted
    assert (workdir / 'stage1' / 'results.json').exists()
    assert 'fitted the frozen teacher' in killed.stderr
  if run == 'mmin_stage1':  # killed in stage 1: stage mmin had not started
    assert not (workdir / 'mmin').exists()
  resumed = _run(_command(run, toy, data_dir, workdir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'resumed from step {steps[-1]}' in resumed.stderr
  if run == 'mmin':
    assert 'stage stage1: finished' in resumed.stderr  # skipped, not retrained
    assert 'fitted the frozen teacher' not in resumed.stderr  # the checkpoint carries them: no refit

  b = json.loads((workdir / 'results.json').read_text())
  assert a['selected_step'] == b['selected_step']
  assert [r['condition'] for r in a['rows']] == [r['condition'] for r in b['rows']]
  for ra, rb in zip(a['rows'], b['rows']):
    for k, v in ra['metrics'].items():
      assert abs(v - rb['metrics'][k]) < 1e-6, (ra['condition'], k, v, rb['metrics'][k])


def test_sigterm_saves_the_step_in_flight_and_resumes_equal(tmp_path, shared):
  """SIGTERM once the run has saved step 5: it exits with EXIT_PREEMPTED (75) after saving the
  step in flight, and the rerun ends like the uninterrupted run."""
  toy, data_dir, uninterrupted = shared
  a = uninterrupted('fusion')
  workdir = tmp_path / 'preempted'
  process = subprocess.Popen([sys.executable] + _command('fusion', toy, data_dir, workdir),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not (workdir / 'checkpoints' / 'latest' / '5').exists() and time.monotonic() < deadline:
    assert process.poll() is None, process.stderr.read()[-3000:]
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 75, stderr[-3000:]
  assert 'preempted: stopped on a signal at step' in stderr
  saved = int(stderr.split('stopped on a signal at step ')[1].split()[0].rstrip(':'))
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints' / 'latest').iterdir()
                 if p.name.isdigit())
  assert steps[-1] == saved >= 5 and not (workdir / 'results.json').exists()
  assert not (workdir / '.lock').exists()  # released on the way out
  resumed = _run(_command('fusion', toy, data_dir, workdir))
  assert resumed.returncode == 0 and f'resumed from step {saved}' in resumed.stderr
  b = json.loads((workdir / 'results.json').read_text())
  assert a['selected_step'] == b['selected_step']
  for ra, rb in zip(a['rows'], b['rows']):
    for k, v in ra['metrics'].items():
      assert abs(v - rb['metrics'][k]) < 1e-6, (ra['condition'], k, v, rb['metrics'][k])
