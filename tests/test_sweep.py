"""Vmapped sweeps (mmer_jax/sweep.py, launch/sweep.py): grouping, tables, and members equal to
separate runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import bclstm_iemocap
from configs import fusion_iemocap
from configs import mmin_iemocap
from mmer_jax import sweep
from mmer_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_fusion(**overrides):
  """fusion_iemocap:smoke with small encoders: a sweep and its separate runs in seconds."""
  config = fusion_iemocap.get_config('smoke')
  config.method.encoders.embed_dim = 16
  config.method.encoders.num_filters = 8
  config.method.head.hidden = (16,)
  config.eval.rates = (0.0, 0.5)
  return sweep.apply_overrides(config, overrides)


def test_split_groups_vmaps_numeric_fields_and_separates_structure():
  config = tiny_fusion()
  members = [{'seed': 0}, {'seed': 1, 'optimizer.learning_rate': 1e-3},
             {'seed': 0, 'method.head.dropout': 0.1}, {'seed': 0, 'train.missing_rate': 0.5},
             {'seed': 0, 'method.name': 'late_fusion'}, {'seed': 1, 'method.name': 'late_fusion'},
             {'seed': 2, 'method.encoders.embed_dim': 32}]
  groups = sweep.split_groups(config, members)
  assert [len(g.members) for g in groups] == [4, 2, 1]
  assert groups[1].fixed == {'method.name': 'late_fusion'} and groups[1].vmapped
  assert groups[2].fixed == {'method.encoders.embed_dim': 32} and not groups[2].vmapped
  # A field named in `separate` makes its own groups although it could be vmapped.
  groups = sweep.split_groups(config, members[:3], separate=['method.head.dropout'])
  assert [len(g.members) for g in groups] == [2, 1]


def test_dialogue_level_seeds_are_separate_jobs():
  """A dialogue batch's padded length depends on its dialogues, so only members sharing the data
  order (the seed) of a dialogue-level method can be stacked."""
  config = bclstm_iemocap.get_config('smoke')
  assert len(sweep.split_groups(config, [{'seed': 0}, {'seed': 1}])) == 2
  assert len(sweep.split_groups(config, [{'seed': 0}, {'seed': 0, 'optimizer.learning_rate': 1e-2}])) == 1
  with pytest.raises(ValueError, match='separate groups'):
    sweep.train_group(config, [{'seed': 0}, {'seed': 1}], '/tmp/never_written')


def test_staged_config_seeds_form_one_group():
  groups = sweep.split_groups(mmin_iemocap.get_config('smoke'), mmin_iemocap.sweep())
  assert len(groups) == 1 and len(groups[0].members) == len(mmin_iemocap.sweep())


def test_overrides_name_the_bad_field():
  with pytest.raises(KeyError, match='optimizer.learning_rat'):
    sweep.apply_overrides(tiny_fusion(), {'optimizer.learning_rat': 1e-3})
  with pytest.raises(TypeError, match='optimizer.learning_rate'):
    sweep.apply_overrides(tiny_fusion(), {'optimizer.learning_rate': 'fast'})
  with pytest.raises(TypeError, match='member 1'):
    sweep.split_groups(tiny_fusion(), [{'seed': 0}, 3])


def test_summary_means_and_stds_over_members_and_settings():
  def result(wa):
    return {'method': 'm', 'dataset': 'd', 'task': 'classification', 'split': 'test',
            'rows': [{'condition': 'full', 'metrics': {'wa': wa, 'ua': wa / 2}}]}
  overrides = [{'seed': 0}, {'seed': 1}, {'seed': 0, 'optimizer.learning_rate': 0.1},
               {'seed': 1, 'optimizer.learning_rate': 0.1}]
  values = [0.5, 0.7, 0.2, 0.3]
  table = sweep.summarize(['a', 'b', 'c', 'd'], overrides, [result(v) for v in values] + [])
  row = table['rows'][0]
  np.testing.assert_allclose(row['mean']['wa'], np.mean(values))
  np.testing.assert_allclose(row['std']['wa'], np.std(values, ddof=1))
  assert [s['overrides'] for s in table['settings']] == [{}, {'optimizer.learning_rate': 0.1}]
  np.testing.assert_allclose(table['settings'][1]['rows'][0]['std']['ua'], np.std([0.1, 0.15], ddof=1))
  text = sweep.sweep_markdown(table)
  assert '0.4250 ± ' in text and 'optimizer.learning_rate=0.1 (over seeds)' in text


def _max_difference(a: dict, b: dict) -> float:
  assert [r['condition'] for r in a['rows']] == [r['condition'] for r in b['rows']]
  return max(abs(x['metrics'][k] - y['metrics'][k]) for x, y in zip(a['rows'], b['rows'])
             for k in x['metrics'])


def test_members_equal_separate_runs(tmp_path):
  """Each member of a vmapped group (its own seed, learning rate and dropout) gives the results of
  a separate run with its overrides, to 1e-5, and its own selected step."""
  config = tiny_fusion()
  members = [{'seed': 0}, {'seed': 1, 'optimizer.learning_rate': 5e-3},
             {'seed': 2, 'method.head.dropout': 0.1, 'train.missing_rate': 0.6}]
  config = sweep.apply_overrides(config, {'train.missing': 'rate'})
  table = sweep.run_group(config, members, str(tmp_path / 'sweep'))
  assert table['num_members'] == 3
  for member in members:
    name = sweep.member_name(member)
    with open(tmp_path / 'sweep' / name / 'results.json', encoding='utf-8') as f:
      swept = json.load(f)
    alone = train.train_and_evaluate(sweep.apply_overrides(config, member), str(tmp_path / name))
    assert _max_difference(swept, alone) <= 1e-5, name
    assert swept['selected_step'] == alone['selected_step']
    assert swept['seed'] == member['seed']
  assert (tmp_path / 'sweep' / 'sweep.md').exists()


def test_launcher_prints_one_command_per_job(tmp_path):
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'depths.py').write_text(
      'from configs.fusion_iemocap import get_config  # noqa: F401\n\n\ndef sweep():\n'
      "  return [{'seed': 0}, {'seed': 1}, {'seed': 0, 'method.encoders.embed_dim': 8}]\n")
  out = subprocess.run(
      [sys.executable, 'launch/sweep.py', f'--config={tmp_path}/configs/depths.py:smoke',
       f'--workdir={tmp_path}', '--print'], cwd=REPO, capture_output=True, text=True, timeout=120,
      check=True).stdout.splitlines()
  assert len(out) == 2 and '--group=0' in out[0]
  assert 'mmer_jax.main' in out[1] and '--config.method.encoders.embed_dim=8' in out[1]
  out = subprocess.run(
      [sys.executable, 'launch/sweep.py', '--config=configs/fusion_iemocap.py:smoke',
       f'--workdir={tmp_path}', '--print'], cwd=REPO, capture_output=True, text=True, timeout=120,
      check=True).stdout.splitlines()
  assert len(out) == 1 and '--group=0' in out[0]


SHARDED_SCRIPT = r'''
import jax, numpy as np
from tests.test_sweep import tiny_fusion
from mmer_jax import sweep
assert len(jax.devices()) == 4, jax.devices()
config = tiny_fusion()
members = [{'seed': 0}, {'seed': 1, 'optimizer.learning_rate': 5e-3}]
out = {}
for name, devices in (('one', jax.devices()[:1]), ('mesh', jax.devices())):
  configs = [sweep.stages_lib.resolve(sweep.apply_overrides(config, m)) for m in members]
  run = sweep.SweepRun(configs, ['/tmp/unused/' + sweep.member_name(m) for m in members],
                       '/tmp/unused', fields=sweep.traced_fields(members), devices=devices)
  states = run.place_states(run.init_states())
  losses = []
  for batches in zip(*[r.train_batches(0) for r in run.runs]):
    states, metrics = run.train_step(states, batches)
    losses.append(np.asarray(metrics['loss']))
  out[name] = (dict(run.mesh.shape), np.stack(losses), jax.device_get(states.params))
assert out['one'][0] == {'sweep': 1, 'batch': 1} and out['mesh'][0] == {'sweep': 2, 'batch': 2}
np.testing.assert_allclose(out['one'][1], out['mesh'][1], rtol=1e-5, atol=1e-6)
for a, b in zip(jax.tree.leaves(out['one'][2]), jax.tree.leaves(out['mesh'][2])):
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
print('OK', out['one'][1].shape)
'''


def test_sweep_sharded_over_a_sweep_x_batch_mesh_matches_one_device():
  """Two members on four (forced host) devices, a 2 x 2 mesh: the same losses and parameters as
  on one device after an epoch of steps."""
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4', 'PYTHONPATH': REPO}
  result = subprocess.run([sys.executable, '-c', SHARDED_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_interrupted_sweep_resumes_to_the_uninterrupted_results(tmp_path, monkeypatch):
  """A sweep killed mid-epoch (after a mid-epoch checkpoint) resumes from its stacked state and
  ends with the same member results as an uninterrupted sweep."""
  config = sweep.apply_overrides(tiny_fusion(), {'train.checkpoint_every_steps': 4})
  members = [{'seed': 0}, {'seed': 1, 'optimizer.learning_rate': 5e-3}]
  whole = sweep.run_group(config, members, str(tmp_path / 'whole'))
  calls = {'n': 0}
  original = sweep.SweepRun.train_step

  def failing(self, states, batches):
    calls['n'] += 1
    if calls['n'] == 9:
      raise KeyboardInterrupt('killed')
    return original(self, states, batches)
  monkeypatch.setattr(sweep.SweepRun, 'train_step', failing)
  with pytest.raises(KeyboardInterrupt):
    sweep.run_group(config, members, str(tmp_path / 'resumed'))
  monkeypatch.setattr(sweep.SweepRun, 'train_step', original)
  resumed = sweep.run_group(config, members, str(tmp_path / 'resumed'))
  for a, b in zip(whole['rows'], resumed['rows']):
    for name in a['members']:
      for key, value in a['members'][name].items():
        assert abs(value - b['members'][name][key]) <= 1e-6, (a['condition'], name, key)
