"""MMIN's picture: imagined vs. real embeddings of a missing modality (PCA, evaluation split).

The paper shows t-SNE; PCA is deterministic and needs no extra dependency. With the other
modalities available, the imagined embedding of the missing one (the forward net's output in
its slot) is plotted against the frozen teacher's embedding of its real features, per class.
Needs a method with `imagination(params, batch) -> {'imagined', 'real'}` ([B, M, E] each).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from mmer_jax.data import schema


def write(run, params, workdir: str) -> list[str]:
  method = run.method
  if not hasattr(method, 'imagination'):
    raise ValueError(f'config.analysis=imagination_pca: method {run.config.method.name!r} does not '
                     'imagine missing modalities (it has no `imagination`)')
  modalities = method.modalities
  if len(modalities) < 2:
    return []
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
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
  both = np.concatenate([imagined, real])
  centred = both - both.mean(axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  xy = centred @ vt[:2].T
  fig, ax = plt.subplots(figsize=(6, 5))
  n = len(imagined)
  spec = run.spec
  for c in np.unique(labels):
    name = spec.label_names[int(c)] if spec.label_names else str(c)
    ax.scatter(*xy[n:][labels == c].T, s=8, marker='o', alpha=0.5, color=f'C{int(c)}', label=f'real {name}')
    ax.scatter(*xy[:n][labels == c].T, s=8, marker='x', alpha=0.7, color=f'C{int(c)}',
               label=f'imagined {name}')
  ax.set_title(f'{absent} embedding, imagined from the others vs. real (PCA, {run.config.eval.split} split)')
  ax.legend(fontsize=6, ncol=2)
  path = os.path.join(workdir, f'imagination_pca_{absent}.png')
  fig.savefig(path, dpi=120, bbox_inches='tight')
  plt.close(fig)
  return [path]
