"""analysis/imagination_pca.py: MMIN's PCA figure for classification and regression labels alike.

The figure is driven by a stand-in run (a fixed linear "imagination" over toy batches) rather than
a trained MMIN: `write` only needs the method's `imagination`, the evaluation batches and the
spec, and a real run is covered by test_configs.py's `:smoke` runs. A failing figure leaves
`run_all` going.
"""

from __future__ import annotations

import logging
import types

import jax.numpy as jnp
import numpy as np

from mmer_jax import analysis
from mmer_jax.analysis import imagination_pca
from mmer_jax.data import schema

MODALITIES = ('audio', 'visual', 'text')
EMBED = 4
REGRESSION = schema.DatasetSpec(
    name='toy_regression', task='regression',
    modalities={m: schema.ModalitySpec('utterance', 3) for m in MODALITIES},
    label_range=(-3.0, 3.0))
CLASSIFICATION = schema.DatasetSpec(
    name='toy_classification', task='classification',
    modalities={m: schema.ModalitySpec('utterance', 3) for m in MODALITIES},
    label_names=('angry', 'happy', 'neutral', 'sad'))


class _Method:
  """Stands in for MMIN: `imagination` maps every modality's features linearly to [B, M, E]."""
  modalities = MODALITIES

  def imagination(self, params, batch):
    feats = jnp.stack([batch[m] for m in MODALITIES], axis=1)  # [B, M, 3]
    real = feats @ params['real']
    present = batch['modality_mask'][..., None]
    imagined = jnp.where(present, real, (feats * present).sum(axis=1, keepdims=True) @
                         params['imagine'])
    return {'imagined': imagined, 'real': real}


def _fake_run(spec, labels, *, batch=8):
  """A `train.Run`-like object whose eval split holds `labels` (last batch padded)."""
  rng = np.random.default_rng(0)
  n = len(labels)
  feats = {m: rng.normal(size=(n, 3)).astype(np.float32) for m in MODALITIES}

  def eval_batches(split):
    assert split == 'test'

    def batches():
      for start in range(0, n, batch):
        stop = min(start + batch, n)
        pad = batch - (stop - start)
        out = {m: np.pad(x[start:stop], ((0, pad), (0, 0))) for m, x in feats.items()}
        out['label'] = np.pad(np.asarray(labels)[start:stop], (0, pad))
        out['modality_mask'] = np.ones((batch, 3), bool)
        out['example_mask'] = np.arange(batch) < stop - start
        yield out
    return batches

  config = types.SimpleNamespace(method=types.SimpleNamespace(name='mmin'),
                                 eval=types.SimpleNamespace(split='test'))
  params = {'real': rng.normal(size=(3, EMBED)).astype(np.float32),
            'imagine': rng.normal(size=(3, EMBED)).astype(np.float32)}
  return types.SimpleNamespace(method=_Method(), config=config, spec=spec,
                               eval_batches=eval_batches), params


def _is_png(path) -> bool:
  with open(path, 'rb') as f:
    return f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_pca_figure_for_regression_labels(tmp_path):
  labels = np.random.default_rng(1).uniform(-3, 3, 21).astype(np.float32)  # MOSI-like scores
  run, params = _fake_run(REGRESSION, labels)
  paths = imagination_pca.write(run, params, str(tmp_path))
  assert paths == [str(tmp_path / 'imagination_pca_visual.png')]
  assert _is_png(paths[0]) and (tmp_path / 'imagination_pca_visual.png').stat().st_size > 1000


def test_pca_figure_for_classification_labels(tmp_path):
  labels = np.arange(21, dtype=np.int32) % 4
  run, params = _fake_run(CLASSIFICATION, labels)
  paths = imagination_pca.write(run, params, str(tmp_path))
  assert paths == [str(tmp_path / 'imagination_pca_visual.png')] and _is_png(paths[0])


def test_pca_plot_draws_arrays(tmp_path):
  rng = np.random.default_rng(2)
  imagined, real = rng.normal(size=(30, EMBED)), rng.normal(size=(30, EMBED))
  scores = rng.uniform(-3, 3, 30)
  path = imagination_pca.plot(str(tmp_path / 'r.png'), imagined, real, scores, REGRESSION,
                              title='regression')
  assert path == str(tmp_path / 'r.png') and _is_png(path)
  path = imagination_pca.plot(str(tmp_path / 'c.png'), imagined, real, np.arange(30) % 4,
                              CLASSIFICATION)
  assert _is_png(path)


def test_pca_figure_failure_leaves_run_all_going(tmp_path, caplog):
  """A registered analysis that raises (a method without `imagination`) is logged, not raised."""
  run, params = _fake_run(REGRESSION, np.zeros(4, np.float32))
  run.method = types.SimpleNamespace(modalities=MODALITIES)  # no `imagination`
  with caplog.at_level(logging.WARNING):
    assert analysis.run_all(('imagination_pca',), run, params, str(tmp_path)) == []
  assert any('imagination_pca' in r.getMessage() and 'ValueError' in r.getMessage()
             for r in caplog.records)
