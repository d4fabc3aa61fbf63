"""The post-evaluation analyses (mmer_jax/analysis/__init__.py): a failing one never fails the
run, an unknown name is an error before any runs. The analyses: test_<module>.py (imagination_pca,
imagination_mse, m3er_check_roc, mmgcn_adjacency)."""

from __future__ import annotations

import logging

import pytest

from mmer_jax import analysis


def _fake_analyses(monkeypatch, calls, **fns):
  """Replaces the registry by `fns` (name -> function), each recorded in `calls` when it runs."""
  def recorded(name, fn):
    def wrapper(run, params, workdir):
      calls.append(name)
      return fn(run, params, workdir)
    return wrapper
  table = {name: recorded(name, fn) for name, fn in fns.items()}
  monkeypatch.setattr(analysis, 'get_analysis',
                      lambda name: table[name] if name in table else _unknown(name))


def _unknown(name):
  raise ValueError(f'config.analysis: unknown {name!r}')


def test_run_all_logs_a_failing_analysis_and_runs_the_others(monkeypatch, tmp_path, caplog):
  calls = []

  def broken(run, params, workdir):
    raise TypeError("'c' argument must be a color")

  _fake_analyses(monkeypatch, calls, first=lambda *_: [str(tmp_path / 'a.png')], broken=broken,
                 last=lambda *_: [str(tmp_path / 'b.json')])
  with caplog.at_level(logging.WARNING):
    paths = analysis.run_all(('first', 'broken', 'last'), None, None, str(tmp_path))
  assert paths == [str(tmp_path / 'a.png'), str(tmp_path / 'b.json')]
  assert calls == ['first', 'broken', 'last']
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert 'broken' in warnings[0] and 'TypeError' in warnings[0] and 'must be a color' in warnings[0]
  assert 'unaffected' in warnings[0]


def test_run_all_unknown_name_raises_before_anything_runs(monkeypatch, tmp_path):
  calls = []
  _fake_analyses(monkeypatch, calls, first=lambda *_: [])
  with pytest.raises(ValueError, match='unknown'):
    analysis.run_all(('first', 'no_such_figure'), None, None, str(tmp_path))
  assert not calls


def test_get_analysis_unknown_name_raises():
  with pytest.raises(ValueError, match="unknown 'no_such_figure'.*imagination_pca"):
    analysis.get_analysis('no_such_figure')
  with pytest.raises(ValueError, match='unknown'):
    analysis.run_all(('no_such_figure',), None, None, '/unused')
  assert analysis.run_all((), None, None, '/unused') == []
