"""MMGCN's picture: the learned adjacency around one utterance (heat map, PNG, and JSON).

On the first batch of the evaluation split, the method's `adjacency` gives the normalised edge
weights `D^-1/2 A D^-1/2` the GCN propagates with; the matrix is drawn over the nodes of the
turns within `WINDOW` of one dialogue's middle utterance, in every modality the model uses,
grouped by modality, and written with its labels and the choice as `mmgcn_adjacency.json`. Entry
[i, j] is A[receiver, sender]. Needs a method with `adjacency(params, batch)` (methods/mmgcn.py).

How the dialogue is chosen, the labels and the picture:
docs/mmgcn.md#synthetic-iemocap-6-the-papers-table.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

WINDOW = 4  # turns either side of the chosen utterance
_NAME = 'mmgcn_adjacency'


def node_indices(nodes: Mapping[str, np.ndarray], keys: Sequence[tuple[int, int]]) -> np.ndarray:
  """The node of each (utterance, modality) key in one shard's graph.

  nodes: the shard's node fields `utterance`, `modality` and `real` ([N] each). Exactly one real
  node must match each key (a ValueError otherwise).
  """
  utterance = np.asarray(nodes['utterance'])
  modality = np.asarray(nodes['modality'])
  real = np.asarray(nodes['real'], bool)
  out = []
  for u, m in keys:
    (found,) = np.nonzero(real & (utterance == u) & (modality == m))
    if len(found) != 1:
      raise ValueError(f'{len(found)} real nodes have utterance {u} and modality {m}; expected 1')
    out.append(int(found[0]))
  return np.asarray(out, np.int64)


def dense_adjacency(senders, receivers, weights, nodes: Mapping[str, np.ndarray],
                    keys: Sequence[tuple[int, int]], *, edge_real=None) -> np.ndarray:
  """Dense [K, K] block (float64) of one shard's weighted edge list over the nodes `keys`.

  senders, receivers, weights: [E] of one shard; nodes: its node fields (`node_indices`); keys:
  the (utterance, modality) pairs of the rows and columns, in order. Entry [i, j] is the summed
  weight of the edges from keys[j] to keys[i] (A[receiver, sender]); edges with `edge_real`
  False (padding) are left out, and so are edges touching a node outside `keys`.
  """
  senders = np.asarray(senders, np.int64)
  receivers = np.asarray(receivers, np.int64)
  weights = np.asarray(weights, np.float64)
  index = node_indices(nodes, keys)
  num_nodes = max(len(np.asarray(nodes['utterance'])), int(senders.max(initial=-1)) + 1,
                  int(receivers.max(initial=-1)) + 1)
  position = np.full(num_nodes, -1, np.int64)
  position[index] = np.arange(len(index))
  row, col = position[receivers], position[senders]
  keep = (row >= 0) & (col >= 0)
  if edge_real is not None:
    keep &= np.asarray(edge_real, bool)
  matrix = np.zeros((len(index), len(index)), np.float64)
  np.add.at(matrix, (row[keep], col[keep]), weights[keep])
  return matrix


def choose(batch) -> tuple[int, int]:
  """(dialogue, turn): the batch's first real dialogue with at least two speakers (else its
  first real dialogue) and its middle turn, n // 2 of its n turns."""
  turn_mask = np.asarray(batch['turn_mask'], bool)
  speaker = np.asarray(batch['speaker'])
  dialogue_mask = np.asarray(batch.get('dialogue_mask', turn_mask.any(axis=1)), bool)
  real = [b for b in range(turn_mask.shape[0]) if dialogue_mask[b] and turn_mask[b].any()]
  if not real:
    raise ValueError('the first evaluation batch holds no dialogue')
  several = [b for b in real if len(np.unique(speaker[b][turn_mask[b]])) >= 2]
  b = (several or real)[0]
  return b, int(turn_mask[b].sum()) // 2


def write(run, params, workdir: str) -> list[str]:
  """Draws the normalised adjacency around the chosen utterance; writes the PNG and the JSON."""
  method = run.method
  if not hasattr(method, 'adjacency'):
    raise ValueError(f'config.analysis={_NAME}: method {run.config.method.name!r} has no graph '
                     '(no `adjacency`)')
  split = run.config.eval.split
  batch = next(iter(run.eval_batches(split)()))
  batch, _, weights = method.adjacency(params, batch)  # the batch with its graph
  weights = np.asarray(weights)
  graph = batch['graph']
  b, turn = choose(batch)
  turn_mask = np.asarray(batch['turn_mask'], bool)
  num_dialogues, max_turns = turn_mask.shape
  shards = np.asarray(graph.senders).shape[0]
  per_shard = num_dialogues // shards
  s, k = divmod(b, per_shard)
  n = int(turn_mask[b].sum())
  turns = list(range(max(0, turn - WINDOW), min(n, turn + WINDOW + 1)))
  used = [m for m in method.modalities if m in getattr(method, 'use_modalities', method.modalities)]
  mods = [method.modalities.index(m) for m in used]
  keys = [(k * max_turns + t, mi) for mi in mods for t in turns]  # grouped by modality
  nodes = {name: np.asarray(v)[s] for name, v in graph.nodes.items()}
  matrix = dense_adjacency(np.asarray(graph.senders)[s], np.asarray(graph.receivers)[s],
                           weights[s], nodes, keys, edge_real=np.asarray(graph.edges['real'])[s])
  speaker = np.asarray(batch['speaker'])[b]
  labels = [f't{t} {method.modalities[mi][0]} s{int(speaker[t])}' for mi in mods for t in turns]
  chosen = [i for i, t in enumerate(t for _ in mods for t in turns) if t == turn]

  os.makedirs(workdir, exist_ok=True)
  index = batch.get('index')
  record = {
      'split': split, 'dialogue': int(b),
      'dialogue_index': None if index is None else int(np.asarray(index)[b]),
      'utterance_turn': int(turn), 'num_turns': n, 'turns': turns, 'modalities': used,
      'labels': labels, 'chosen_rows': chosen,
      'normalisation': 'D^-1/2 A D^-1/2 (entry [i, j]: weight of the edge j -> i)',
      'matrix': matrix.tolist(),
  }
  json_path = os.path.join(workdir, f'{_NAME}.json')
  with open(json_path, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=1)
  title = (f'MMGCN normalised adjacency, {split} dialogue {record["dialogue_index"]}, '
           f'turn {turn} of {n} (+-{WINDOW} turns)')
  png_path = plot(os.path.join(workdir, f'{_NAME}.png'), matrix, labels, chosen,
                  group=len(turns), title=title)
  return [png_path, json_path]


def plot(path: str, matrix: np.ndarray, labels: Sequence[str], chosen: Sequence[int], *,
         group: int, title: str = '') -> str:
  """A square heat map of `matrix` with `labels` on both axes, a line between each block of
  `group` rows (one modality), and the `chosen` rows outlined and labelled in red."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import patches  # pylint: disable=g-import-not-at-top

  k = len(labels)
  size = min(4.0 + 0.32 * k, 20.0)
  fig, ax = plt.subplots(figsize=(size + 1.5, size))
  image = ax.imshow(matrix, cmap='viridis', vmin=0.0, interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='normalised edge weight')
  ax.set_xticks(range(k))
  ax.set_yticks(range(k))
  ax.set_xticklabels(labels, rotation=90, fontsize=7, family='monospace')
  ax.set_yticklabels(labels, fontsize=7, family='monospace')
  for edge in range(group, k, group):
    ax.axhline(edge - 0.5, color='white', linewidth=1.2)
    ax.axvline(edge - 0.5, color='white', linewidth=1.2)
  for i in chosen:
    ax.add_patch(patches.Rectangle((-0.5, i - 0.5), k, 1.0, fill=False, edgecolor='red',
                                   linewidth=1.2))
    ax.get_yticklabels()[i].set_color('red')
    ax.get_yticklabels()[i].set_fontweight('bold')
  ax.set_xlabel('sender')
  ax.set_ylabel('receiver')
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
