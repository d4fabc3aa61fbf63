"""Comparing our tensors with the authors': per-quantity max differences, tolerances, the report."""

from __future__ import annotations

from typing import Mapping

from flax import traverse_util
import numpy as np

# Relative tolerances by precision and kind of quantity (forward outputs and losses; gradients and
# parameters after an optimiser step).
TOLERANCES = {
    'float32': {'forward': 1e-5, 'gradient': 1e-4},
    'float64': {'forward': 1e-9, 'gradient': 1e-8},
}


def difference(ours, theirs, tolerance: float) -> dict:
  """{"max_abs", "max_rel", "tolerance", "ok"}: max_rel = max|ours - theirs| / max|theirs|.

  Relative to the tensor's largest magnitude, not elementwise (which blows up near zero). Shapes
  must agree exactly; a tensor of zeros compares by its absolute difference.
  """
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  if ours.shape != theirs.shape:
    raise ValueError(f'shapes differ: ours {ours.shape}, theirs {theirs.shape}')
  max_abs = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
  scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
  max_rel = max_abs / scale if scale > 0 else max_abs
  ok = bool(np.isfinite(max_rel) and max_rel <= tolerance)
  return {'max_abs': max_abs, 'max_rel': max_rel, 'tolerance': tolerance, 'ok': ok}


def group_vector(tree, group: str) -> np.ndarray:
  """All leaves under the '/'-path `group`, flattened in name order into one vector."""
  flat = traverse_util.flatten_dict(tree, sep='/')
  keys = sorted(k for k in flat if k == group or k.startswith(group + '/'))
  if not keys:
    raise KeyError(f'no parameters under {group!r}')
  return np.concatenate([np.ravel(flat[k]) for k in keys])


def compare_groups(ours, theirs, groups, tolerance: float, prefix: str) -> dict:
  """One entry per parameter group ('{prefix}/{group}'), each over the group's whole vector."""
  return {f'{prefix}/{g}': difference(group_vector(ours, g), group_vector(theirs, g), tolerance)
          for g in groups}


def report(method: str, sections: Mapping[str, Mapping[str, dict]], **extra) -> dict:
  """The JSON object: `extra` fields, one section per precision, and the top-level "ok"."""
  out = {'method': method, **extra}
  out.update(sections)
  out['ok'] = bool(sections) and all(q['ok'] for s in sections.values() for q in s.values())
  return out
