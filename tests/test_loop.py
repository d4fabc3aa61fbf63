"""mmer_jax/loop.py: the one training loop, with one member (a run) and S members (a sweep)
under the run's semantics: divergence, early stopping, best checkpoints, staged sweeps."""

from __future__ import annotations

import json

import pytest

from configs import mmin_iemocap
from mmer_jax import diagnostics
from mmer_jax import loop
from mmer_jax import sweep
from mmer_jax import train
from test_sweep import _max_difference
from test_sweep import tiny_fusion

DIVERGING = {'seed': 1, 'optimizer.learning_rate': 1e30}  # inf parameters after a step or two


def _metrics_lines(path):
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_member_record_round_trips_and_counts_patience():
  member = loop.Member(best_metric=0.5, best_step=10, best_epoch=2, epoch_done=4)
  assert loop.Member.from_meta(member.meta()) == member
  assert loop.Member.from_meta(member.meta(), patience=2).stopped  # 4 - 2 >= 2
  assert not loop.Member.from_meta(member.meta(), patience=3).stopped
  # A checkpoint written before the record existed (no stopped/diverged keys) still loads.
  old = {'best_metric': 0.5, 'best_step': 10, 'best_epoch': 2, 'epoch_done': 3, 'warnings': ['a']}
  assert loop.Member.from_meta(old).warnings == ['a'] and not loop.Member.from_meta(old).stopped
  assert member.improves(0.6, 'max') and not member.improves(0.6, 'min')
  member.warn('collapse', 'one'), member.warn('collapse', 'two')
  assert member.warnings == ['collapse: one']


def test_a_diverged_member_is_stopped_and_reported_the_others_equal_separate_runs(tmp_path):
  config = tiny_fusion()
  members = [{'seed': 0}, DIVERGING]
  table = sweep.run_group(config, members, str(tmp_path / 'sweep'))
  name_ok, name_bad = (sweep.member_name(m) for m in members)
  assert table['num_members'] == 1
  reported = {m['name']: m for m in table['members']}
  assert not reported[name_bad]['has_results'] and 'diverged' in reported[name_bad]['diverged']
  assert name_bad in (tmp_path / 'sweep' / 'sweep.md').read_text().split('Diverged')[1]
  assert not (tmp_path / 'sweep' / name_bad / 'results.json').exists()
  # It stopped logging at its divergence; the other logged to the end.
  bad_steps = [r['step'] for r in _metrics_lines(tmp_path / 'sweep' / name_bad / 'metrics.jsonl')]
  ok_steps = [r['step'] for r in _metrics_lines(tmp_path / 'sweep' / name_ok / 'metrics.jsonl')]
  assert max(bad_steps, default=0) < max(ok_steps)
  alone = train.train_and_evaluate(sweep.apply_overrides(config, members[0]), str(tmp_path / 'a'))
  swept = json.loads((tmp_path / 'sweep' / name_ok / 'results.json').read_text())
  assert _max_difference(swept, alone) <= 1e-5 and swept['selected_step'] == alone['selected_step']
  # The single run: the same member stops the run with the error, and says why on disk.
  with pytest.raises(diagnostics.TrainingDiverged, match='diverged'):
    train.train_and_evaluate(sweep.apply_overrides(config, DIVERGING), str(tmp_path / 'b'))
  assert 'diverged' in loop.read_diverged(str(tmp_path / 'b'))


def test_a_member_that_stops_early_equals_its_separate_run(tmp_path):
  config = sweep.apply_overrides(tiny_fusion(), {'train.num_epochs': 8, 'train.patience': 1})
  members = [{'seed': 0}, {'seed': 1}, {'seed': 2}]
  sweep.run_group(config, members, str(tmp_path / 'sweep'))
  num_steps = train.Run(config).num_steps
  last_logged = []
  for member in members:
    name = sweep.member_name(member)
    swept = json.loads((tmp_path / 'sweep' / name / 'results.json').read_text())
    alone = train.train_and_evaluate(sweep.apply_overrides(config, member), str(tmp_path / name))
    assert _max_difference(swept, alone) <= 1e-5 and swept['selected_step'] == alone['selected_step']
    steps = [r['step'] for r in _metrics_lines(tmp_path / 'sweep' / name / 'metrics.jsonl')]
    alone_steps = [r['step'] for r in _metrics_lines(tmp_path / name / 'metrics.jsonl')]
    assert max(steps) == max(alone_steps)  # a stopped member no longer logs
    last_logged.append(max(steps))
  assert min(last_logged) < num_steps, 'no member stopped early: the test lost its case'


def test_an_interrupted_sweeps_member_can_be_evaluated(tmp_path, monkeypatch):
  config = sweep.apply_overrides(tiny_fusion(), {'train.num_epochs': 4})
  members = [{'seed': 0}, {'seed': 1}]
  calls = {'n': 0}
  original = sweep.SweepRun.train_step

  def interrupted(self, states, batches):
    calls['n'] += 1
    if calls['n'] == 20:  # after the first epochs' validations
      raise KeyboardInterrupt('killed')
    return original(self, states, batches)
  monkeypatch.setattr(sweep.SweepRun, 'train_step', interrupted)
  with pytest.raises(KeyboardInterrupt):
    sweep.run_group(config, members, str(tmp_path / 'sweep'))
  for member in members:
    workdir = tmp_path / 'sweep' / sweep.member_name(member)
    assert not (workdir / 'results.json').exists()
    results = train.evaluate_best(sweep.apply_overrides(config, member), str(workdir))
    assert 0 < results['selected_step'] < 20 and (workdir / 'results.json').exists()


@pytest.mark.slow
def test_a_staged_sweep_equals_separate_staged_runs(tmp_path):
  config = mmin_iemocap.get_config('smoke')
  config.method.encoders.embed_dim, config.method.encoders.num_filters = 16, 8
  config.eval.rates = (0.0, 0.5)
  config.analysis = ()
  members = [{'seed': 0}, {'seed': 1}]
  sweep.run_group(config, members, str(tmp_path / 'sweep'))
  for member in members:
    name = sweep.member_name(member)
    swept = json.loads((tmp_path / 'sweep' / name / 'results.json').read_text())
    alone = train.train_and_evaluate(sweep.apply_overrides(config, member), str(tmp_path / name))
    assert _max_difference(swept, alone) <= 1e-5 and swept['selected_step'] == alone['selected_step']
    for stage in ('stage1', 'mmin'):
      assert (tmp_path / 'sweep' / name / stage / 'results.json').exists()
