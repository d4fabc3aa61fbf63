"""Pure-numpy generator behind the synthetic stand-ins (no TFDS here, so it is cheap to test).

Every release is described by a `Release` (shapes, split sizes, labels, conversation shape) and the
planted signal by `Signal` (the knobs): a shared emotion latent seen by every modality plus
private noise, text > audio > visual in strength, and for conversations a speaker-aware emotion
Markov chain with ambiguous turns that only context resolves. Everything is drawn from
`np.random.default_rng([seed, ...])` streams keyed by (split, chunk), so a split is reproducible
chunk by chunk and never needs to be held in memory at once.

The generative story: docs/data.md#the-generative-story.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Mapping

import numpy as np

from mmer_jax.data import schema

LATENT_DIM = 8  # emotion latent K (smaller when a modality is narrower, see `latent_dim`)
NUISANCE_DIM = 8  # private, label-free directions per modality
CHUNK_UTTERANCES = 512  # utterances per generated chunk (whole dialogues for conversations)


@dataclasses.dataclass(frozen=True)
class Signal:
  """The planted signal: what makes the papers' claims testable on synthetic data.

  strengths: per modality, how strongly it sees the shared emotion latent (text > audio > visual).
  noise: private per-utterance noise of every modality (the latent-space SNR is strength / noise).
  frame_noise: extra per-frame noise of sequence modalities (averages out when pooling frames).
  shared: label-free variation shared by all modalities (caps what even fusion can reach).
  separation: norm of the class prototypes (or of the sentiment axis at |label| = 3).
  ambiguous: fraction of utterances whose own features carry no emotion signal.
  persistence, influence: the conversation Markov chain (see module docstring).
  nuisance: scale of the private label-free directions; iso: per-dimension white noise.
  offset: scale of the fixed per-dimension feature offsets (bias_m ~ offset * N(0, 1)): real
    features are not centred, so a zero-filled missing modality is an input unlike any real one,
    and the larger the offset the further from the data it lies.
  """
  strengths: Mapping[str, float]
  noise: float = 1.0
  frame_noise: float = 1.5
  shared: float = 0.5
  separation: float = 2.0
  ambiguous: float = 0.0
  persistence: float = 0.8
  influence: float = 0.1
  nuisance: float = 1.0
  iso: float = 0.3
  offset: float = 0.5

  def __post_init__(self):
    unknown = set(self.strengths) - set(schema.MODALITIES)
    if unknown:
      raise ValueError(f'strengths for unknown modalities {sorted(unknown)}')
    if not 0.0 <= self.ambiguous <= 1.0:
      raise ValueError(f'ambiguous must be a fraction in [0, 1], got {self.ambiguous}')
    if self.persistence < 0 or self.influence < 0 or self.persistence + self.influence > 1:
      raise ValueError('persistence and influence must be >= 0 and sum to at most 1')
    if min(self.noise, self.frame_noise, self.shared, self.separation, self.nuisance, self.iso,
           self.offset) < 0:
      raise ValueError('noise scales and separation must be >= 0')

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['strengths'] = dict(sorted(self.strengths.items()))
    return d


@dataclasses.dataclass(frozen=True)
class Turns:
  """Dialogue lengths: min + NegativeBinomial(shape) with the given mean, clipped to max."""
  mean: float
  min: int
  max: int
  shape: float


@dataclasses.dataclass(frozen=True)
class Release:
  """Shapes, split sizes and label set of one real feature release, mirrored synthetically.

  kind 'conversation': utterance-level features, dialogues of several speakers; `sizes` counts
  dialogues. kind 'utterance': sequence features, each utterance its own dialogue; `sizes`
  counts utterances. `max_len` is set for sequence modalities; `fixed_length` makes every
  sequence exactly max_len frames (MMSA aligned features).
  """
  name: str
  kind: str
  dims: Mapping[str, int]
  sizes: Mapping[str, int]
  signal: Signal
  label_names: tuple[str, ...] | None = None
  label_probs: tuple[float, ...] | None = None
  similar: tuple[tuple[str, str], ...] = ()  # confusable class pairs (prototypes pulled together)
  label_range: tuple[float, float] | None = None
  sentiment_mixture: tuple[tuple[float, float, float], ...] = ()  # (weight, mean, sd)
  zero_fraction: float = 0.0  # regression: share of exact-zero labels
  label_step: float = 0.0  # regression: labels are multiples of this (annotator averages)
  max_len: Mapping[str, int] | None = None
  fixed_length: bool = False
  turns: Turns | None = None
  speakers: tuple[str, ...] = ()  # speaker-name pool
  speaker_weights: tuple[float, ...] | None = None  # relative frequency of each pool name
  cast_sizes: tuple[float, ...] = (0.0, 0.0, 1.0)  # P(k speakers in a dialogue), index = k
  switch: float = 0.8  # P(the next turn goes to someone else)

  @property
  def task(self) -> str:
    return 'classification' if self.label_names else 'regression'

  @property
  def level(self) -> str:
    return 'sequence' if self.max_len else 'utterance'

  @property
  def latent_dim(self) -> int:
    """K: at most LATENT_DIM, and narrower than the narrowest modality so P_m stays isometric."""
    return min(LATENT_DIM, min(self.dims.values()) - 1)


_IEMOCAP_SPEAKERS = tuple(f'Ses0{s}{g}' for s in range(1, 6) for g in 'FM')
_MSP_SPEAKERS = tuple(f'MSP-IMPROV-S0{s}{g}' for s in range(1, 7) for g in 'FM')
# Default signals, tuned so linear probes land near the papers' unimodal rows (see tests).
_CONVERSATION_SIGNAL = Signal(strengths={'text': 1.5, 'audio': 1.0, 'visual': 0.65},
                              ambiguous=0.2)
_UTTERANCE_SIGNAL = Signal(strengths={'text': 1.2, 'audio': 0.8, 'visual': 0.5})
_SENTIMENT_SIGNAL = Signal(strengths={'text': 1.5, 'audio': 0.55, 'visual': 0.4}, separation=3.0)
_FRIENDS = ('Ross', 'Rachel', 'Monica', 'Chandler', 'Joey', 'Phoebe')
_MELD_SPEAKERS = _FRIENDS + tuple(f'Guest{i:03d}' for i in range(1, 255))

RELEASES: dict[str, Release] = {r.name: r for r in (
    # MMGCN's IEMOCAP_features.pkl: 151 dialogues, 7433 utterances; class shares of the release.
    Release(
        name='iemocap_6', kind='conversation',
        dims={'audio': 1582, 'visual': 342, 'text': 100},
        sizes={'train': 108, 'valid': 12, 'test': 31},
        label_names=('happy', 'sad', 'neutral', 'angry', 'excited', 'frustrated'),
        label_probs=(0.087, 0.146, 0.230, 0.148, 0.140, 0.249),
        similar=(('happy', 'excited'), ('angry', 'frustrated'), ('sad', 'neutral')),
        turns=Turns(mean=49.2, min=16, max=110, shape=10.0),
        speakers=('M', 'F'), cast_sizes=(0, 0, 1.0), switch=0.75,
        signal=dataclasses.replace(_CONVERSATION_SIGNAL, persistence=0.8, influence=0.1)),
    # MELD_features_raw1.pkl: 1433 dialogues, 13708 utterances, neutral ~47%.
    Release(
        name='meld_7', kind='conversation',
        dims={'audio': 300, 'visual': 342, 'text': 600},
        sizes={'train': 1039, 'valid': 114, 'test': 280},
        label_names=('neutral', 'surprise', 'fear', 'sadness', 'joy', 'disgust', 'anger'),
        label_probs=(0.469, 0.119, 0.026, 0.073, 0.168, 0.026, 0.119),
        similar=(('anger', 'disgust'), ('fear', 'surprise')),
        turns=Turns(mean=9.6, min=1, max=33, shape=3.0),
        speakers=_MELD_SPEAKERS, speaker_weights=(12.0,) * 6 + (1.0,) * 254,
        cast_sizes=(0, 0, 0.45, 0.30, 0.15, 0.07, 0.03), switch=0.85,
        signal=dataclasses.replace(_CONVERSATION_SIGNAL, persistence=0.6, influence=0.15)),
    # MMIN's IEMOCAP 4-class (happy = happy + excited): 5531 utterances, split 80/10/10.
    Release(
        name='iemocap_4', kind='utterance',
        dims={'audio': 130, 'visual': 342, 'text': 1024},
        max_len={'audio': 100, 'visual': 50, 'text': 22},
        sizes={'train': 4425, 'valid': 553, 'test': 553},
        label_names=('angry', 'happy', 'neutral', 'sad'),
        label_probs=(0.199, 0.296, 0.309, 0.196),
        similar=(('neutral', 'sad'),),
        speakers=_IEMOCAP_SPEAKERS,
        signal=_UTTERANCE_SIGNAL),
    # MMIN's MSP-IMPROV 4-class: 3819 utterances, split 80/10/10.
    Release(
        name='msp_improv_4', kind='utterance',
        dims={'audio': 130, 'visual': 342, 'text': 1024},
        max_len={'audio': 100, 'visual': 50, 'text': 22},
        sizes={'train': 3055, 'valid': 382, 'test': 382},
        label_names=('angry', 'happy', 'neutral', 'sad'),
        label_probs=(0.120, 0.262, 0.454, 0.164),
        similar=(('neutral', 'sad'),),
        speakers=_MSP_SPEAKERS,
        signal=_UTTERANCE_SIGNAL),
    # MMSA aligned_50.pkl, CMU-MOSI: sentiment in [-3, 3], averages of 5 annotators.
    Release(
        name='mosi', kind='utterance',
        dims={'audio': 5, 'visual': 20, 'text': 768},
        max_len={'audio': 50, 'visual': 50, 'text': 50}, fixed_length=True,
        sizes={'train': 1284, 'valid': 229, 'test': 686},
        label_range=(-3.0, 3.0), sentiment_mixture=((0.5, -1.3, 0.9), (0.5, 1.3, 0.9)),
        zero_fraction=0.03, label_step=0.2,
        speakers=tuple(f'mosi_video{i:03d}' for i in range(93)),
        signal=_SENTIMENT_SIGNAL),
    # MMSA aligned_50.pkl, CMU-MOSEI: skewed positive, many neutral (0) segments, 3 annotators.
    Release(
        name='mosei', kind='utterance',
        dims={'audio': 74, 'visual': 35, 'text': 768},
        max_len={'audio': 50, 'visual': 50, 'text': 50}, fixed_length=True,
        sizes={'train': 16326, 'valid': 1871, 'test': 4659},
        label_range=(-3.0, 3.0), sentiment_mixture=((0.35, -1.1, 0.8), (0.65, 1.0, 0.8)),
        zero_fraction=0.15, label_step=1 / 3,
        speakers=tuple(f'mosei_video{i:04d}' for i in range(3228)),
        signal=_SENTIMENT_SIGNAL),
    # CMU-MOSEI shapes with M3ER's 6 emotion classes (dominant emotion per segment).
    Release(
        name='mosei_emotions', kind='utterance',
        dims={'audio': 74, 'visual': 35, 'text': 768},
        max_len={'audio': 50, 'visual': 50, 'text': 50}, fixed_length=True,
        sizes={'train': 16326, 'valid': 1871, 'test': 4659},
        label_names=('happy', 'sad', 'anger', 'fear', 'disgust', 'surprise'),
        label_probs=(0.50, 0.17, 0.14, 0.04, 0.10, 0.05),
        similar=(('anger', 'disgust'), ('fear', 'surprise')),
        speakers=tuple(f'mosei_video{i:04d}' for i in range(3228)),
        signal=_UTTERANCE_SIGNAL),
)}


# ----------------------------------------------------------------------------- the fixed world


@dataclasses.dataclass(frozen=True)
class World:
  """Everything fixed for a (release, seed): prototypes, projections and biases."""
  prototypes: np.ndarray  # [C, K] class prototypes, or [2, K] sentiment/intensity axes
  projections: Mapping[str, np.ndarray]  # m -> [K + R_m, D_m], rows orthogonal, scaled
  biases: Mapping[str, np.ndarray]  # m -> [D_m]


def _orthonormal_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
  """[rows, dim] with orthonormal rows (a random isometric embedding of R^rows into R^dim)."""
  q, r = np.linalg.qr(rng.standard_normal((dim, rows)))
  return (q * np.sign(np.diag(r))).T


def class_prototypes(rng: np.random.Generator, release: Release, separation: float) -> np.ndarray:
  """Orthogonal class directions, with `similar` pairs pulled towards each other (confusable)."""
  k = release.latent_dim
  if release.task == 'regression':
    return separation * _orthonormal_rows(rng, 2, k)  # sentiment axis, intensity axis
  names = list(release.label_names)
  base = _orthonormal_rows(rng, len(names), k)
  protos = base.copy()
  for a, b in release.similar:
    i, j = names.index(a), names.index(b)
    protos[i] += 0.5 * base[j]
    protos[j] += 0.5 * base[i]
  protos /= np.linalg.norm(protos, axis=1, keepdims=True)
  return (separation * protos).astype(np.float32)


def create_world(release: Release, signal: Signal, seed: int) -> World:
  """Draws the fixed parts of the generator; depends only on (release, seed, separation, offset)."""
  rng = np.random.default_rng([seed, 0])
  prototypes = class_prototypes(rng, release, signal.separation).astype(np.float32)
  k = release.latent_dim
  projections, biases = {}, {}
  for m in schema.MODALITIES:
    if m not in release.dims:
      continue
    dim = release.dims[m]
    rows = k + min(NUISANCE_DIM, dim - k)
    # Scaled so each feature has about unit variance when the latent has unit variance per row.
    projections[m] = (_orthonormal_rows(rng, rows, dim) * math.sqrt(dim / rows)).astype(np.float32)
    biases[m] = (signal.offset * rng.standard_normal(dim)).astype(np.float32)
  return World(prototypes=prototypes, projections=projections, biases=biases)


# ----------------------------------------------------------------------------- labels


def quantise_sentiment(rng: np.random.Generator, release: Release, n: int) -> np.ndarray:
  """Regression labels: a mixture clipped to label_range, snapped to the annotators' grid, with
  a share of exact zeros (so Acc-2 with and without zeros differ)."""
  weights, means, sds = (np.array(c, np.float64) for c in zip(*release.sentiment_mixture))
  comp = rng.choice(len(weights), size=n, p=weights / weights.sum())
  value = rng.normal(means[comp], sds[comp])
  if release.label_step:
    value = np.round(value / release.label_step) * release.label_step
  lo, hi = release.label_range
  value = np.clip(value, lo, hi)
  value[rng.random(n) < release.zero_fraction] = 0.0
  return value.astype(np.float32)


def emotion_chain(rng: np.random.Generator, speakers: np.ndarray, probs: np.ndarray,
                  persistence: float, influence: float) -> np.ndarray:
  """Labels of one dialogue from the speaker-aware Markov chain (see module docstring)."""
  labels = np.empty(len(speakers), np.int64)
  last: dict[int, int] = {}
  fresh = rng.choice(len(probs), size=len(speakers), p=probs)
  u = rng.random(len(speakers))
  for t, s in enumerate(speakers):
    s = int(s)
    if s in last and u[t] < persistence:
      labels[t] = last[s]
    elif t > 0 and u[t] >= 1.0 - influence:
      labels[t] = labels[t - 1]
    else:
      labels[t] = fresh[t]
    last[s] = int(labels[t])
  return labels


def turn_taking(rng: np.random.Generator, length: int, cast: int, switch: float) -> np.ndarray:
  """Speaker index per turn among `cast` people: the floor changes hands with prob. `switch`."""
  speakers = np.empty(length, np.int64)
  speakers[0] = rng.integers(cast)
  for t in range(1, length):
    if cast > 1 and rng.random() < switch:
      other = rng.integers(cast - 1)
      speakers[t] = other + (other >= speakers[t - 1])
    else:
      speakers[t] = speakers[t - 1]
  return speakers


def dialogue_lengths(rng: np.random.Generator, turns: Turns, n: int) -> np.ndarray:
  extra = turns.mean - turns.min
  p = turns.shape / (turns.shape + extra)
  return np.minimum(turns.min + rng.negative_binomial(turns.shape, p, size=n), turns.max)


# ----------------------------------------------------------------------------- features


def emotion_latent(rng: np.random.Generator, world: World, release: Release, signal: Signal,
                   label: np.ndarray, ambiguous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(label part a_i mu(y_i), shared part shared * e_i), both [N, K] float32."""
  n = len(label)
  k = release.latent_dim
  if release.task == 'classification':
    mu = world.prototypes[label]
  else:
    y = label.astype(np.float32)[:, None] / 3.0
    mu = y * world.prototypes[0] + 0.5 * np.abs(y) * world.prototypes[1]
  intensity = rng.uniform(0.6, 1.4, size=(n, 1)).astype(np.float32)
  intensity[ambiguous] = 0.0
  shared = signal.shared * rng.standard_normal((n, k), dtype=np.float32)
  return (intensity * mu).astype(np.float32), shared


def _latent_scale(signal: Signal, strength: float, k: int, frames: bool) -> float:
  """Approximate std of a modality latent row, so features come out at about unit scale."""
  var = strength ** 2 * (signal.separation ** 2 / k + signal.shared ** 2) + signal.noise ** 2
  if frames:
    var += signal.frame_noise ** 2
  return math.sqrt(var)


def _render(rng: np.random.Generator, world: World, m: str, latent: np.ndarray,
            iso: float) -> np.ndarray:
  """Maps [..., K + R_m] latents to features: tanh(P_m latent) + iso noise + bias, float32.

  The per-dimension noise is the bulk of the random numbers drawn (about 10^9 for mosei), so it
  is uniform noise made from random bytes (~10x cheaper than Gaussians; its shape does not
  matter), added in place: x = step * (tanh(h) / step + bytes) + bias.
  """
  proj = world.projections[m]
  h = (latent.reshape(-1, proj.shape[0]) @ proj).reshape(latent.shape[:-1] + proj.shape[1:])
  np.tanh(h, out=h)
  if iso > 0:
    step = np.float32(iso * math.sqrt(12.0) / 256.0)  # int8 is uniform on [-128, 127]
    h *= 1 / step
    np.add(h, np.frombuffer(rng.bytes(h.size), np.int8).reshape(h.shape), out=h,
           casting='unsafe')
    h *= step
  h += world.biases[m]
  return h


def modality_features(rng: np.random.Generator, world: World, release: Release, signal: Signal,
                      m: str, label_part: np.ndarray, shared_part: np.ndarray,
                      lengths: np.ndarray | None = None) -> np.ndarray:
  """Features of modality m: [N, D] (utterance level) or [N, T, D] zero-padded beyond `lengths`."""
  n, k = label_part.shape
  rows = world.projections[m].shape[0]
  s = signal.strengths[m]
  if lengths is None:
    latent = np.empty((n, rows), np.float32)
    latent[:, :k] = s * (label_part + shared_part)
    latent[:, :k] += signal.noise * rng.standard_normal((n, k), dtype=np.float32)
    latent[:, k:] = signal.nuisance * rng.standard_normal((n, rows - k), dtype=np.float32)
    latent /= _latent_scale(signal, s, k, frames=False)
    return _render(rng, world, m, latent, signal.iso)
  t_max = release.max_len[m]
  t = np.arange(t_max, dtype=np.float32)
  # An intensity envelope over the utterance (mean ~1 over its valid frames).
  phase = rng.uniform(0, 2 * np.pi, size=(n, 1)).astype(np.float32)
  envelope = 1.0 + 0.5 * np.sin(2 * np.pi * t[None] / lengths[:, None] + phase)
  frame_noise = _ar1(rng, (n, t_max, rows), rho=0.5)
  latent = frame_noise  # reuse the buffer: [N, T, rows]
  latent[:, :, :k] *= signal.frame_noise
  latent[:, :, :k] += (s * label_part)[:, None, :] * envelope[:, :, None]
  utt = s * shared_part + signal.noise * rng.standard_normal((n, k), dtype=np.float32)
  latent[:, :, :k] += utt[:, None, :]
  latent[:, :, k:] *= signal.nuisance
  latent /= _latent_scale(signal, s, k, frames=True)
  x = _render(rng, world, m, latent, signal.iso)
  for i in np.flatnonzero(lengths < t_max):  # padding frames are never stored; keep them inert
    x[i, lengths[i]:] = 0.0
  return x


def _ar1(rng: np.random.Generator, shape: tuple[int, int, int], rho: float) -> np.ndarray:
  """Unit-variance AR(1) noise along axis 1, float32."""
  x = rng.standard_normal(shape, dtype=np.float32)
  c = np.float32(math.sqrt(1 - rho ** 2))
  x[:, 1:] *= c
  for i in range(1, shape[1]):
    x[:, i] += np.float32(rho) * x[:, i - 1]
  return x


def sequence_lengths(rng: np.random.Generator, release: Release, m: str, n: int) -> np.ndarray:
  """Frames per utterance: max_len when fixed, else uniform in [max_len // 4, max_len]."""
  t_max = release.max_len[m]
  if release.fixed_length:
    return np.full(n, t_max, np.int32)
  return rng.integers(max(1, t_max // 4), t_max + 1, size=n).astype(np.int32)


# ----------------------------------------------------------------------------- chunks


def _label_probs(release: Release) -> np.ndarray:
  p = np.asarray(release.label_probs, np.float64)
  return p / p.sum()


def _features_chunk(rng: np.random.Generator, world: World, release: Release, signal: Signal,
                    label: np.ndarray, ambiguous: np.ndarray):
  label_part, shared_part = emotion_latent(rng, world, release, signal, label, ambiguous)
  features, lengths = {}, {}
  for m in schema.MODALITIES:
    if m not in release.dims:
      continue
    if release.level == 'sequence':
      lengths[m] = sequence_lengths(rng, release, m, len(label))
    features[m] = modality_features(rng, world, release, signal, m, label_part, shared_part,
                                    lengths.get(m))
  return features, lengths


def units_per_chunk(release: Release) -> int:
  """Dialogues (conversations) or utterances per chunk: about CHUNK_UTTERANCES utterances."""
  if release.kind == 'conversation':
    return max(1, int(CHUNK_UTTERANCES // release.turns.mean))
  return CHUNK_UTTERANCES


def num_chunks(release: Release, size: int) -> int:
  """How many chunks a split of `size` dialogues / utterances is generated in."""
  return -(-size // units_per_chunk(release))


def conversation_chunk(release: Release, signal: Signal, world: World, seed: int, split: str,
                       index: int, num_dialogues: int) -> schema.SplitData:
  """Chunk `index` of a split of `num_dialogues` dialogues: whole dialogues, ids global."""
  per_chunk = units_per_chunk(release)
  start = index * per_chunk
  count = min(per_chunk, num_dialogues - start)
  rng = np.random.default_rng([seed, 1 + schema.SPLITS.index(split), index])
  cast_probs = np.asarray(release.cast_sizes, np.float64) / sum(release.cast_sizes)
  weights = np.asarray(release.speaker_weights or [1.0] * len(release.speakers), np.float64)
  probs = _label_probs(release)
  uid, did, turn, names, labels = [], [], [], [], []
  for j, length in enumerate(dialogue_lengths(rng, release.turns, count)):
    dialogue = f'synth_{split}_d{start + j:04d}'
    cast = min(rng.choice(len(cast_probs), p=cast_probs), len(release.speakers))
    cast_names = rng.choice(len(release.speakers), size=cast, replace=False,
                            p=weights / weights.sum())
    who = turn_taking(rng, int(length), int(cast), release.switch)
    labels.append(emotion_chain(rng, who, probs, signal.persistence, signal.influence))
    for t in range(int(length)):
      uid.append(f'{dialogue}_t{t:03d}')
      did.append(dialogue)
      turn.append(t)
      names.append(release.speakers[cast_names[who[t]]])
  label = np.concatenate(labels)
  ambiguous = rng.random(len(label)) < signal.ambiguous
  features, lengths = _features_chunk(rng, world, release, signal, label, ambiguous)
  return schema.SplitData(
      utterance_id=uid, dialogue_id=did, turn=np.asarray(turn, np.int32), speaker_name=names,
      label=label, features=features, lengths=lengths,
      source=f'synthetic/{release.name} {split} chunk {index}')


def utterance_chunk(release: Release, signal: Signal, world: World, seed: int, split: str,
                    index: int, num_utterances: int) -> schema.SplitData:
  """Chunk `index` of a split of `num_utterances` independent utterances (own dialogues)."""
  start = index * CHUNK_UTTERANCES
  n = min(CHUNK_UTTERANCES, num_utterances - start)
  rng = np.random.default_rng([seed, 1 + schema.SPLITS.index(split), index])
  if release.task == 'classification':
    label = rng.choice(len(release.label_names), size=n, p=_label_probs(release))
  else:
    label = quantise_sentiment(rng, release, n)
  ambiguous = rng.random(n) < signal.ambiguous
  speaker = rng.integers(len(release.speakers), size=n)
  uid = [f'synth_{split}_{i:06d}' for i in range(start, start + n)]
  features, lengths = _features_chunk(rng, world, release, signal, label, ambiguous)
  return schema.SplitData(
      utterance_id=uid, dialogue_id=uid, turn=np.zeros(n, np.int32),
      speaker_name=[release.speakers[s] for s in speaker], label=label, features=features,
      lengths=lengths, source=f'synthetic/{release.name} {split} chunk {index}')


def generate_chunk(release: Release, signal: Signal, world: World, seed: int, split: str,
                   index: int, size: int) -> schema.SplitData:
  """Chunk `index` of a split of `size` dialogues / utterances; chunks are independent streams."""
  if not 0 <= index < num_chunks(release, size):
    raise IndexError(f'chunk {index} of a {size}-unit split ({num_chunks(release, size)} chunks)')
  make = conversation_chunk if release.kind == 'conversation' else utterance_chunk
  return make(release, signal, world, seed, split, index, size)


def generate_split(release: Release, signal: Signal, seed: int, split: str,
                   size: int) -> Iterator[schema.SplitData]:
  """The chunks of one split, lazily: `size` dialogues (conversations) or utterances."""
  world = create_world(release, signal, seed)
  for index in range(num_chunks(release, size)):
    yield generate_chunk(release, signal, world, seed, split, index, size)
