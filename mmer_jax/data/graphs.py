"""Graphs over dialogue batches (jraph), built on the host by the methods that ask for them.

A graph method (MMGCN) returns `add_dialogue_graph(batch, num_modalities, num_shards)` from its
`host_batch` hook, for training and evaluation batches alike; the generic pipeline builds no
graphs. The batch's B dialogues are split into `num_shards` consecutive groups (one per device
of the data-parallel mesh) and each group gets its own padded `jraph.GraphsTuple`; the shards are
stacked on a leading axis, so every leaf of `batch['graph']` has shape [num_shards, ...] and
splits over devices exactly like the other batch fields (sharded jit and pmap alike).

Every shard's graph is padded to one node budget per bucket (all possible nodes) and to an edge
budget rounded up to a power of two (`edge_budget`): a step compiles once per (bucket, edge
budget), a handful of shapes per run, while the padded edge lists stay close to the real ones
(a fixed worst-case budget would cost the square of the bucket length per dialogue).
"""

from __future__ import annotations

from typing import Sequence

import jraph
import numpy as np


def node_budget(dialogues_per_shard: int, max_turns: int, num_modalities: int) -> int:
  """Nodes of every padded shard graph: one per (dialogue, turn, modality) slot, plus padding."""
  return dialogues_per_shard * max_turns * num_modalities + 1


def edge_budget(num_edges: int, minimum: int = 64) -> int:
  """The padded edge count of a graph with `num_edges` real edges: the next power of two above."""
  return max(minimum, 1 << int(num_edges).bit_length())


def num_edges(turns: int, num_modalities: int) -> int:
  """Edges of one dialogue's graph: M n^2 within modalities (self-loops included) and
  n M (M - 1) across modalities."""
  m = num_modalities
  return m * turns * turns + turns * m * (m - 1)


def _one_dialogue(turns: int, num_modalities: int) -> tuple[np.ndarray, ...]:
  """(node_turn, node_modality, senders, receivers, cross) of one dialogue, nodes modality-major."""
  n, m = turns, num_modalities
  node_turn = np.tile(np.arange(n), m)
  node_mod = np.repeat(np.arange(m), n)
  # Within a modality: all ordered pairs (i, j) of the modality's block, (i, i) included.
  i, j = np.meshgrid(np.arange(n), np.arange(n), indexing='ij')
  block = np.arange(m)[:, None] * n
  intra_s = (block + i.reshape(1, -1)).reshape(-1)
  intra_r = (block + j.reshape(1, -1)).reshape(-1)
  # Across modalities: the same turn in two different modalities, both directions.
  pairs = [(a, c) for a in range(m) for c in range(m) if a != c]
  cross_s = np.concatenate([a * n + np.arange(n) for a, _ in pairs] + [np.zeros(0, int)])
  cross_r = np.concatenate([c * n + np.arange(n) for _, c in pairs] + [np.zeros(0, int)])
  senders = np.concatenate([intra_s, cross_s])
  receivers = np.concatenate([intra_r, cross_r])
  cross = np.concatenate([np.zeros(len(intra_s), bool), np.ones(len(cross_s), bool)])
  return node_turn, node_mod, senders, receivers, cross


def dialogue_graph(turns: Sequence[int], *, max_turns: int, num_modalities: int,
                   n_edge: int | None = None) -> jraph.GraphsTuple:
  """MMGCN's graph for a group of dialogues, padded to `node_budget` nodes and `n_edge` edges.

  One node per (dialogue, turn, modality) of the group's real turns and of every modality the
  dataset has; which of them take part in a step (the modalities a sample has, the subset a
  config uses) is decided on the device by masking, so random modality dropout needs no new graph.
  Within a dialogue every pair of nodes of one modality is connected (self-loops included), and
  each utterance's nodes are connected across modalities (both directions). Edges carry no
  weights (MMGCN computes them from the node features inside the model), only `cross` (the edge
  joins two modalities) and `real` (not padding). Node fields: `utterance` (flat index
  k * max_turns + turn into the group's [B_group, L] turn grid), `modality` (index into the
  dataset's present modalities) and `real`.
  """
  graphs = []
  for k, n in enumerate(turns):
    node_turn, node_mod, senders, receivers, cross = _one_dialogue(int(n), num_modalities)
    graphs.append(jraph.GraphsTuple(
        nodes={'utterance': (k * max_turns + node_turn).astype(np.int32),
               'modality': node_mod.astype(np.int32), 'real': np.ones(len(node_turn), bool)},
        edges={'cross': cross, 'real': np.ones(len(senders), bool)},
        senders=senders.astype(np.int32), receivers=receivers.astype(np.int32), globals=None,
        n_node=np.array([len(node_turn)], np.int32), n_edge=np.array([len(senders)], np.int32)))
  total = sum(num_edges(int(n), num_modalities) for n in turns)
  n_edge = edge_budget(total) if n_edge is None else n_edge
  if n_edge <= total:
    raise ValueError(f'edge budget {n_edge} does not exceed the {total} real edges')
  batched = jraph.batch_np(graphs)
  return jraph.pad_with_graphs(batched, n_node=node_budget(len(turns), max_turns, num_modalities),
                               n_edge=n_edge, n_graph=len(turns) + 1)


def sharded_dialogue_graph(turns: Sequence[int], *, max_turns: int, num_modalities: int,
                           num_shards: int = 1) -> jraph.GraphsTuple:
  """`dialogue_graph` of each of `num_shards` consecutive groups of dialogues, stacked on a
  leading shard axis (one edge budget for all shards: the largest shard's)."""
  if len(turns) % num_shards:
    raise ValueError(f'{len(turns)} dialogues do not split into {num_shards} equal shards')
  per = len(turns) // num_shards
  groups = [list(turns[s * per:(s + 1) * per]) for s in range(num_shards)]
  n_edge = edge_budget(max(sum(num_edges(int(n), num_modalities) for n in g) for g in groups))
  shards = [dialogue_graph(g, max_turns=max_turns, num_modalities=num_modalities, n_edge=n_edge)
            for g in groups]
  return jraph.GraphsTuple(*[None if leaves[0] is None else
                             _stack(leaves) for leaves in zip(*shards)])


def _stack(leaves):
  if isinstance(leaves[0], dict):
    return {k: np.stack([x[k] for x in leaves]) for k in leaves[0]}
  return np.stack(leaves)


def add_dialogue_graph(batch: dict, num_modalities: int, num_shards: int = 1) -> dict:
  """A dialogue batch with `graph` added: `sharded_dialogue_graph` of its real turns."""
  turn_mask = np.asarray(batch['turn_mask'], bool)
  turns = [int(n) for n in turn_mask.sum(axis=1)]
  return {**batch, 'graph': sharded_dialogue_graph(
      turns, max_turns=turn_mask.shape[1], num_modalities=num_modalities, num_shards=num_shards)}
