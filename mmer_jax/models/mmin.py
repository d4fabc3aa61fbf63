"""MMIN: the Missing Modality Imagination Network (Zhao, Li, Jin, ACL 2021) as one Flax module.

    features, modality_mask
      -> student encoders (missing modalities' inputs and embeddings zeroed)  -> student [B, M*E]
      -> forward imagination net (CRA, or a plain AE for MMIN-AE)  -> imagined [B, M*E], latents
      -> classifier(latents)                                       -> logits [B, C]
      -> backward imagination net(imagined)                        -> cycle [B, M*E]
    teacher encoders (frozen, always deterministic, outputs stop_gradient'ed):
      teacher_complement  teacher on the input where only the *missing* modalities are kept (the
                          available ones zeroed at the input): the forward-imagination target
                          (the issue, DESIGN.md, the authors' code)
      teacher_full        teacher on the full input: the alternative target (`teacher_target`)

The joint vectors concatenate the per-modality embeddings in the library's fixed (audio, visual,
text) order, restricted to the modalities the dataset has (`modalities`), so a dataset with fewer
modalities just has a smaller joint dimension (3 x 128 = 384 for MMIN's setting). The authors
concatenate in (audio, text, visual) order; the order is immaterial to the model.

The student follows `fusion.EarlyFusion`'s convention (stage 1 of MMIN), so the stage-1 `encoders`
parameters can be copied into both `encoders` (the student, fine-tuned) and `teacher` (frozen):
a missing modality's input features are zeroed before encoding and its embedding is replaced by
zeros. (The authors only zero the raw input, so a missing slot holds encoder(zeros), a
bias-driven constant; with an exact zero the CRA input says unambiguously what is missing.)
For `teacher_complement`, by contrast, an available slot holds teacher(zero input), not zero:
that is the authors' target, reproduced as it is.

The module does not know the losses; `methods/mmin.py` combines the outputs into
CE + fwd_weight * MSE(imagined, target) + cycle_weight * MSE(cycle, stop_gradient(student)).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmer_jax.data.schema import MODALITIES
from mmer_jax.models import cra
from mmer_jax.models import fusion
from mmer_jax.models.encoders import ModalityEncoders

Array = jax.Array

IMAGINATION_KINDS = ('cra', 'ae')
TEACHER_TARGETS = ('full', 'complement')


def joint(embeddings: Mapping[str, Array], modalities: Sequence[str]) -> Array:
  """Concatenates per-modality embeddings in `modalities` order: [B, len(modalities) * E]."""
  return jnp.concatenate([embeddings[m] for m in modalities], axis=-1)


def complement_target(full: Array, zero: Array, modality_mask: Array,
                      modalities: Sequence[str]) -> Array:
  """`teacher_complement` from the teacher's joint embeddings of the complete input (`full`) and
  of the all-zero input (`zero`): missing slots from `full`, available ones from `zero`.

  Exact because the teacher encodes each modality on its own; this is how the cached targets
  (`methods/mmin.py`) rebuild the complement for each drawn mask without running the teacher.
  """
  batch, dim = full.shape[0], full.shape[-1] // len(modalities)
  missing = jnp.stack([~fusion.modality_column(modality_mask, m, batch) for m in modalities], -1)
  return jnp.where(jnp.repeat(missing, dim, axis=-1), full, zero)


class MMIN(nn.Module):
  """Student encoders, forward/backward imagination nets, classifier on the latents, frozen teacher.

  Attributes:
    modalities, embed_dim, kinds, encoder_dropout, num_filters, kernel_sizes, mlp_hidden: the
      `ModalityEncoders` of the student (`encoders`) and of the teacher (`teacher`), identical to
      `fusion.EarlyFusion`'s so the stage-1 encoders fit both.
    imagination: 'cra' (MMIN: `cra.CascadeResidualAE`) or 'ae' (MMIN-AE: `cra.PlainAE`).
    cra_blocks, cra_layers, cra_transition: the CRA (MMIN: 5 blocks of (256, 128, 64), with the
      authors' transition MLP); the classifier reads cra_blocks * cra_layers[-1] latent features.
    ae_layers, ae_output_relu: the plain AE of MMIN-AE; the classifier reads ae_layers[-1].
    cycle: build the backward (cycle) imagination net (False for MMIN-NoCycle: no parameters).
    share_weights: the backward net is the forward net itself (the authors' MSP-IMPROV setting).
    classifier_hidden, classifier_dropout, num_outputs: the `fusion.MLPHead` (`classifier`).

  Parameter subtrees: `encoders`, `teacher`, `forward_net`, `backward_net` (only when `cycle` and
  not `share_weights`), `classifier`.
  """
  modalities: Sequence[str] = MODALITIES
  embed_dim: int = 128
  kinds: Any = None
  encoder_dropout: float = 0.5
  num_filters: int = 128
  kernel_sizes: Sequence[int] = (3, 4, 5)
  mlp_hidden: Sequence[int] = ()
  imagination: str = 'cra'
  cra_blocks: int = 5
  cra_layers: Sequence[int] = (256, 128, 64)
  cra_transition: bool = True
  ae_layers: Sequence[int] = (512, 450, 384, 256)
  ae_output_relu: bool = True
  cycle: bool = True
  share_weights: bool = False
  classifier_hidden: Sequence[int] = (128, 128)
  classifier_dropout: float = 0.5
  num_outputs: int = 4

  def _encoder_kwargs(self) -> dict:
    return dict(modalities=tuple(self.modalities), embed_dim=self.embed_dim, kinds=self.kinds,
                dropout=self.encoder_dropout, num_filters=self.num_filters,
                kernel_sizes=tuple(self.kernel_sizes), mlp_hidden=tuple(self.mlp_hidden))

  def _encoders(self, name: str) -> ModalityEncoders:
    return ModalityEncoders(**self._encoder_kwargs(), name=name)

  def teacher_embedding(self, teacher_params, features: Mapping[str, Array],
                        lengths: Mapping[str, Array] | None = None) -> Array:
    """The frozen teacher's joint embedding of complete inputs (`teacher_full`), computed from
    the `teacher` parameter subtree alone: what `methods/mmin.py` caches per training example."""
    encoders = ModalityEncoders(**self._encoder_kwargs(), parent=None)
    embeddings = encoders.apply({'params': teacher_params}, features, lengths, deterministic=True)
    return joint(embeddings, tuple(self.modalities))

  def _imagination_net(self, name: str) -> nn.Module:
    if self.imagination == 'cra':
      return cra.CascadeResidualAE(num_blocks=self.cra_blocks, layers=tuple(self.cra_layers),
                                   dropout=0.0, transition=self.cra_transition, name=name)
    if self.imagination == 'ae':
      return cra.PlainAE(layers=tuple(self.ae_layers), dropout=0.0, output_relu=self.ae_output_relu,
                         name=name)
    raise ValueError(f'imagination: expected one of {IMAGINATION_KINDS}, got {self.imagination!r}')

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
    modalities = tuple(self.modalities)
    batch = features[modalities[0]].shape[0]
    present = {m: fusion.modality_column(modality_mask, m, batch) for m in modalities}

    # Student: missing modalities zeroed at the input and in the embedding (EarlyFusion's way).
    embeddings = self._encoders('encoders')(
        fusion.mask_features(features, modality_mask, modalities), lengths,
        deterministic=deterministic)
    embeddings = {m: jnp.where(present[m][:, None], e, jnp.zeros((), e.dtype))
                  for m, e in embeddings.items()}
    student = joint(embeddings, modalities)

    forward_net = self._imagination_net('forward_net')
    imagined, latents = forward_net(student, deterministic=deterministic)
    logits = fusion.MLPHead(tuple(self.classifier_hidden), self.num_outputs, self.classifier_dropout,
                            name='classifier')(latents, deterministic=deterministic)

    cycle = None
    if self.cycle:
      backward_net = forward_net if self.share_weights else self._imagination_net('backward_net')
      if with_cycle or self.is_initializing():
        cycle, _ = backward_net(imagined, deterministic=deterministic)
        if not with_cycle:
          cycle = None

    out = {'logits': logits, 'imagined': imagined, 'cycle': cycle, 'student': student,
           'latents': latents, 'teacher_full': None, 'teacher_complement': None}
    if teacher_targets or self.is_initializing():
      teacher = self._encoders('teacher')
      if 'full' in teacher_targets or self.is_initializing():
        full = teacher(features, lengths, deterministic=True)
        out['teacher_full'] = jax.lax.stop_gradient(joint(full, modalities))
      if 'complement' in teacher_targets:
        # Only the missing modalities are kept: the available ones are zeroed at the input.
        missing = None if modality_mask is None else ~jnp.asarray(modality_mask, bool)
        if missing is None:
          missing = jnp.zeros((batch, len(MODALITIES)), bool)
        comp = teacher(fusion.mask_features(features, missing, modalities), lengths,
                       deterministic=True)
        out['teacher_complement'] = jax.lax.stop_gradient(joint(comp, modalities))
    return out
