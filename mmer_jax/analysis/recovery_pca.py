"""IMDer's picture: recovered vs. real projected features of a missing modality (PCA, PNG).

The paper shows the features a score network recovers for a missing modality against the real
ones, without and with the condition (the available modalities). Here, on the evaluation split
with one modality absent (visual, or the first one without visual), each example's real
projection, its conditional recovery and its recovery from a zero condition (the stand-in for
the unconditional one: our networks are trained conditionally) are averaged over time and drawn
in 2-D PCA, one PNG for each kind of recovery (`imagination_pca.plot`, marker x = recovered).
Needs a method with `recovery_views(params, batch, rng)` (methods/imder.py).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from mmer_jax.analysis import imagination_pca
from mmer_jax.data import schema


def write(run, params, workdir: str) -> list[str]:
  """Recovers the absent modality over the evaluation split and draws both pictures."""
  method = run.method
  if not hasattr(method, 'recovery_views'):
    raise ValueError(f'config.analysis=recovery_pca: method {run.config.method.name!r} does not '
                     'recover missing modalities (it has no `recovery_views`)')
  modalities = method.modalities
  absent = 'visual' if 'visual' in modalities else modalities[0]
  k = modalities.index(absent)
  keep = np.array([m != absent for m in schema.MODALITIES])
  views = jax.jit(method.recovery_views)
  rng = jax.random.PRNGKey(run.config.seed)
  collected = {'real': [], 'conditional': [], 'unconditional': []}
  labels = []
  for batch in run.eval_batches(run.config.eval.split)():
    batch = dict(batch, modality_mask=np.asarray(batch['modality_mask']) & keep)
    out = views(params, batch, rng)
    valid = np.asarray(batch['example_mask'])
    for name in collected:
      collected[name].append(np.asarray(out[name])[k][valid])
    labels.append(np.asarray(batch['label'])[valid])
  arrays = {name: np.concatenate(v) for name, v in collected.items()}
  labels = np.concatenate(labels)
  paths = []
  for kind in ('unconditional', 'conditional'):
    path = os.path.join(workdir, f'recovery_pca_{absent}_{kind}.png')
    title = (f'{absent} projection, {kind} recovery vs. real '
             f'(PCA, {run.config.eval.split} split)')
    paths.append(imagination_pca.plot(path, arrays[kind], arrays['real'], labels, run.spec,
                                      title=title, name=f'{kind} recovery'))
  return paths
