"""Graphs over dialogue batches (jraph), built on the host by the methods that ask for them.

A graph method (MMGCN) returns `add_dialogue_graph(batch, num_modalities)` from its `host_batch`
hook, for training and evaluation batches alike; the generic pipeline builds no graphs. Every
graph of a bucket is padded to one budget (`graph_budget`), so the step compiles once per bucket.
"""

from __future__ import annotations

from typing import Sequence

import jraph
import numpy as np


def graph_budget(dialogues_per_batch: int, max_turns: int, num_modalities: int) -> tuple[int, int, int]:
  """(n_node, n_edge, n_graph) that every padded graph of a bucket is padded to."""
  m, length = num_modalities, max_turns
  n_node = dialogues_per_batch * length * m + 1
  n_edge = dialogues_per_batch * (m * length * length + length * m * (m - 1))
  return n_node, n_edge, dialogues_per_batch + 1


def dialogue_graph(turns: Sequence[int], *, max_turns: int, num_modalities: int) -> jraph.GraphsTuple:
  """MMGCN's graph for a batch of dialogues, padded to the bucket's fixed budget.

  One node per (dialogue, turn, present modality). Within a dialogue every pair of nodes of one
  modality is connected (self-loops included), and each utterance's nodes are connected across
  modalities (both directions). Edges carry no features: MMGCN computes edge weights from the node
  features inside the model. Node fields: `utterance` (flat index b * max_turns + turn into the
  batch's [B, L] turn grid, which the model gathers from) and `modality` (index into the dataset's
  present modalities).
  """
  graphs = []
  m = num_modalities
  for b, n in enumerate(turns):
    node_turn = np.tile(np.arange(n), m)
    node_mod = np.repeat(np.arange(m), n)
    # Intra-modality: all ordered pairs (i, j) within each modality block.
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing='ij')
    intra_s = (np.arange(m)[:, None] * n + i.reshape(1, -1)).reshape(-1)
    intra_r = (np.arange(m)[:, None] * n + j.reshape(1, -1)).reshape(-1)
    # Cross-modality: the same turn in two different modalities.
    pairs = [(a, c) for a in range(m) for c in range(m) if a != c]
    cross_s = np.concatenate([a * n + np.arange(n) for a, _ in pairs]) if pairs else np.zeros(0, int)
    cross_r = np.concatenate([c * n + np.arange(n) for _, c in pairs]) if pairs else np.zeros(0, int)
    senders = np.concatenate([intra_s, cross_s]).astype(np.int32)
    receivers = np.concatenate([intra_r, cross_r]).astype(np.int32)
    graphs.append(jraph.GraphsTuple(
        nodes={'utterance': (b * max_turns + node_turn).astype(np.int32),
               'modality': node_mod.astype(np.int32)},
        edges=None, senders=senders, receivers=receivers, globals=None,
        n_node=np.array([n * m], np.int32), n_edge=np.array([len(senders)], np.int32)))
  n_node, n_edge, n_graph = graph_budget(len(turns), max_turns, m)
  batched = jraph.batch_np(graphs)
  return jraph.pad_with_graphs(batched, n_node=n_node, n_edge=n_edge, n_graph=n_graph)


def add_dialogue_graph(batch: dict, num_modalities: int) -> dict:
  """A dialogue batch with `graph` added: `dialogue_graph` of its real turns ([B, L] turn_mask)."""
  turn_mask = np.asarray(batch['turn_mask'], bool)
  turns = [int(n) for n in turn_mask.sum(axis=1)]
  return {**batch, 'graph': dialogue_graph(turns, max_turns=turn_mask.shape[1],
                                           num_modalities=num_modalities)}
