"""MMIN's picture: imagined vs. real embeddings of a missing modality (PCA, evaluation split).

The paper shows t-SNE; PCA is deterministic and needs no extra dependency. With the other
modalities available, the imagined embedding of the missing one (the forward net's output in
its slot) is plotted against the frozen teacher's embedding of its real features. Both share one
PCA basis (fitted on the two sets together); the marker tells real (o) from imagined (x).
Classification colours by class (one colour per class, a legend entry per class and set).
Regression colours by the label's value on a diverging colormap (coolwarm) spanning the dataset's
label range, e.g. MOSI's sentiment [-3, 3] with neutral in the middle, with a colorbar: a
continuous score has no classes to list, and binning it would hide how the embedding follows it.
Needs a method with `imagination(params, batch) -> {'imagined', 'real'}` ([B, M, E] each).
`write` collects the embeddings; `plot` only draws arrays (testable without a trained run).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from mmer_jax.data import schema


def write(run, params, workdir: str) -> list[str]:
  """Embeds the evaluation split with one modality absent and draws it; returns [the PNG's path].

  The absent modality is visual (the first one when visual is not used); none with a single one.
  """
  method = run.method
  if not hasattr(method, 'imagination'):
    raise ValueError(f'config.analysis=imagination_pca: method {run.config.method.name!r} does not '
                     'imagine missing modalities (it has no `imagination`)')
  modalities = method.modalities
  if len(modalities) < 2:
    return []
  absent = 'visual' if 'visual' in modalities else modalities[0]
  k = modalities.index(absent)
  keep = np.array([m != absent for m in schema.MODALITIES])
  imagine = jax.jit(method.imagination)
  imagined, real, labels = [], [], []
  for batch in run.eval_batches(run.config.eval.split)():
    batch = dict(batch, modality_mask=np.asarray(batch['modality_mask']) & keep)
    out = imagine(params, batch)
    valid = np.asarray(batch['example_mask'])
    imagined.append(np.asarray(out['imagined'])[valid, k])
    real.append(np.asarray(out['real'])[valid, k])
    labels.append(np.asarray(batch['label'])[valid])
  imagined, real, labels = map(np.concatenate, (imagined, real, labels))
  path = os.path.join(workdir, f'imagination_pca_{absent}.png')
  title = f'{absent} embedding, imagined from the others vs. real (PCA, {run.config.eval.split} split)'
  return [plot(path, imagined, real, labels, run.spec, title=title)]


def plot(path: str, imagined: np.ndarray, real: np.ndarray, labels: np.ndarray,
         spec: schema.DatasetSpec, *, title: str = '', name: str = 'imagined') -> str:
  """Draws `imagined` and `real` ([N, E], row i of both from example i) in 2-D PCA to `path`.

  `labels` [N] are class indices or regression scores, as `spec.task` says; colours as the module
  docstring describes; `name` labels the non-real set (IMDer's picture says 'recovered').
  Returns `path`.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import cm  # pylint: disable=g-import-not-at-top
  from matplotlib import colors  # pylint: disable=g-import-not-at-top
  from matplotlib import lines  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  set_name = name
  imagined, real, labels = np.asarray(imagined), np.asarray(real), np.asarray(labels)
  both = np.concatenate([imagined, real])
  centred = both - both.mean(axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  xy = centred @ vt[:2].T
  n = len(imagined)
  fig, ax = plt.subplots(figsize=(6, 5))
  try:
    if spec.task == 'classification':
      for c in np.unique(labels):
        name = spec.label_names[int(c)] if spec.label_names else str(c)
        ax.scatter(*xy[n:][labels == c].T, s=8, marker='o', alpha=0.5, color=f'C{int(c)}',
                   label=f'real {name}')
        ax.scatter(*xy[:n][labels == c].T, s=8, marker='x', alpha=0.7, color=f'C{int(c)}',
                   label=f'{set_name} {name}')
      ax.legend(fontsize=6, ncol=2)
    else:
      values = labels.astype(np.float64).reshape(n)
      lo, hi = spec.label_range or (float(values.min()), float(values.max()))
      norm = colors.Normalize(vmin=lo, vmax=hi)
      ax.scatter(*xy[n:].T, c=values, cmap='coolwarm', norm=norm, s=8, marker='o', alpha=0.5)
      ax.scatter(*xy[:n].T, c=values, cmap='coolwarm', norm=norm, s=8, marker='x', alpha=0.7)
      fig.colorbar(cm.ScalarMappable(norm=norm, cmap='coolwarm'), ax=ax,  # opaque, unlike points
                   label='label (regression score)')
      ax.legend(handles=[
          lines.Line2D([], [], marker='o', linestyle='', color='grey', label='real'),
          lines.Line2D([], [], marker='x', linestyle='', color='grey', label=set_name),
      ], fontsize=6)
    ax.set_title(title)
    fig.savefig(path, dpi=120, bbox_inches='tight')
  finally:
    plt.close(fig)
  return path
