"""MMIN: the Missing Modality Imagination Network (Zhao, Li, Jin, ACL 2021) as one Flax module.

Student encoders -> forward imagination net (CRA, or a plain AE for MMIN-AE) -> classifier on
its latents, and a backward imagination net over the imagined embedding; a frozen teacher (a
clone of the encoders, outputs stop_gradient'ed) gives the forward targets `teacher_complement`
and `teacher_full`. The caller passes the parts in (`encoders`, `forward_net`, `classifier`).
Joint vectors concatenate the per-modality embeddings in (audio, visual, text) order, restricted
to the dataset's modalities. A missing modality's slot of the student embedding is exactly zero
(`zero_missing_slot=False`: the authors' `encoder(zeros)`).

The module does not know the losses: `methods/mmin.py` combines its outputs.
The data flow and the conventions: docs/mmin.md#the-modules.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.data.schema import MODALITIES
from mmer_jax.models import layers

Array = jax.Array

TEACHER_TARGETS = ('full', 'complement')
joint = layers.joint


def complement_target(full: Array, zero: Array, modality_mask: Array,
                      modalities: Sequence[str]) -> Array:
  """`teacher_complement` from the teacher's joint embeddings of the complete input (`full`) and
  of the all-zero input (`zero`): missing slots from `full`, available ones from `zero`.

  Exact because the teacher encodes each modality on its own; this is how the cached targets
  (`methods/mmin.py`) rebuild the complement for each drawn mask without running the teacher.
  """
  batch, dim = full.shape[0], full.shape[-1] // len(modalities)
  missing = jnp.stack([~layers.modality_column(modality_mask, m, batch) for m in modalities], -1)
  return jnp.where(jnp.repeat(missing, dim, axis=-1), full, zero)


class MMIN(nn.Module):
  """Student encoders, forward/backward imagination nets, classifier on the latents, frozen teacher.

  Attributes:
    encoders: the student's `ModalityEncoders` (subtree `encoders`); the teacher (subtree
      `teacher`) is a clone, identical to `fusion.EarlyFusion`'s encoders so the stage-1
      encoders fit both.
    forward_net: the imagination net (subtree `forward_net`): `(x, deterministic) -> (output,
      latents)`; the classifier reads its latents.
    classifier: the head on the latents (subtree `classifier`).
    cycle: build the backward (cycle) imagination net (False for MMIN-NoCycle: no parameters).
    share_weights: the backward net is the forward net itself (the authors' MSP-IMPROV setting);
      otherwise it is a clone of it (subtree `backward_net`).
    zero_missing_slot: a missing modality's slot of the student embedding is exactly zero (the
      default); False keeps the encoder's output for the zeroed input, `encoder(zeros)`, as the
      authors' code does (`method.missing_slot='encoded_zeros'`).
  """
  encoders: nn.Module
  forward_net: nn.Module
  classifier: nn.Module
  cycle: bool = True
  share_weights: bool = False
  zero_missing_slot: bool = True

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.encoders.modalities)

  def teacher_embedding(self, teacher_params, features: Mapping[str, Array],
                        lengths: Mapping[str, Array] | None = None) -> Array:
    """The frozen teacher's joint embedding of `features` as they are (no mask), computed from
    the `teacher` parameter subtree alone: what `methods/mmin.py` caches per training example."""
    embeddings = self.encoders.clone(parent=None).apply(
        {'params': teacher_params}, features, lengths, deterministic=True)
    return joint(embeddings, self.modalities)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], lengths: Mapping[str, Array] | None = None,
               modality_mask: Array | None = None, *, deterministic: bool,
               teacher_targets: Sequence[str] = TEACHER_TARGETS, with_cycle: bool = True) -> dict:
    """Returns {'logits', 'imagined', 'cycle', 'student', 'latents', 'teacher_full',
    'teacher_complement'}.

    Args:
      features: name -> [B, T, D] or [B, D]; lengths: name -> int [B] for sequence modalities.
      modality_mask: bool [B, 3] in (audio, visual, text) order, True = present (None: all).
      deterministic: dropout off (student TextCNN/MLP encoders, classifier). The teacher is
        always deterministic.
      teacher_targets: which teacher outputs to compute ('full', 'complement'); the others are
        None. Prediction asks for none (the teacher is only a training target).
      with_cycle: run the backward net (None when False or when the model has no cycle).
    """
    unknown = set(teacher_targets) - set(TEACHER_TARGETS)
    if unknown:
      raise ValueError(f'teacher_targets: unknown {sorted(unknown)}; expected {TEACHER_TARGETS}')
    modalities = self.modalities
    batch = features[modalities[0]].shape[0]
    present = {m: layers.modality_column(modality_mask, m, batch) for m in modalities}

    # Student: missing modalities zeroed at the input and (by default) in the embedding
    # (EarlyFusion's way).
    embeddings = self.encoders(layers.mask_features(features, modality_mask, modalities), lengths,
                               deterministic=deterministic)
    if self.zero_missing_slot:
      embeddings = layers.zero_missing(embeddings, present)
    student = joint(embeddings, modalities)

    imagined, latents = self.forward_net(student, deterministic=deterministic)
    logits = self.classifier(latents, deterministic=deterministic)

    cycle = None
    if self.cycle:
      backward_net = (self.forward_net if self.share_weights
                      else self.forward_net.clone(parent=self, name='backward_net'))
      if with_cycle or self.is_initializing():
        cycle, _ = backward_net(imagined, deterministic=deterministic)
        if not with_cycle:
          cycle = None

    out = {'logits': logits, 'imagined': imagined, 'cycle': cycle, 'student': student,
           'latents': latents, 'teacher_full': None, 'teacher_complement': None}
    if teacher_targets or self.is_initializing():
      teacher = self.encoders.clone(parent=self, name='teacher')
      if 'full' in teacher_targets or self.is_initializing():
        full = teacher(features, lengths, deterministic=True)
        out['teacher_full'] = jax.lax.stop_gradient(joint(full, modalities))
      if 'complement' in teacher_targets:
        # Only the missing modalities are kept: the available ones are zeroed at the input.
        missing = None if modality_mask is None else ~jnp.asarray(modality_mask, bool)
        if missing is None:
          missing = jnp.zeros((batch, len(MODALITIES)), bool)
        comp = teacher(layers.mask_features(features, missing, modalities), lengths,
                       deterministic=True)
        out['teacher_complement'] = jax.lax.stop_gradient(joint(comp, modalities))
    return out
