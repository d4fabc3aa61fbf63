"""IMDer against the authors' code (mdswyz/IMDer), weight for weight and noise for noise.

Their networks are imported from the checkout at run time (`trains/singleTask/model/`:
`scoremodel.py`, `rcan.py`, `imder.py`), their `IMDER` built from their own `config/config.json`
(MOSI) with `use_bert=False` and `train_mode='regression'`. Ours are the Flax modules
(`models/score_net.py`, `models/imder_refine.py`, `models/imder_head.py`) and the diffusion
package. One set of weights goes into both through the weight map (`to_authors` /
`from_authors`; `to_composite` / `from_composite` for `models/imder.py`'s stacked variables), and
both run on one batch and one noise sequence (ours, fed to theirs through patched `torch.rand`,
`torch.randn` and `torch.randn_like`), in float32 and float64 (`tolerances.TOLERANCES`): the
score network, the score-matching loss, the Euler-Maruyama sampler, the refinement network, the
fusion head, the losses and their gradients.

What is compared, the weight map and the documented differences: docs/imder_parity.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import sys
import types
import unittest.mock

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from mmer_jax.diffusion import conditioning
from mmer_jax.diffusion import losses
from mmer_jax.diffusion import sampling
from mmer_jax.diffusion import sde as sde_lib
from mmer_jax.models import imder_head
from mmer_jax.models import imder_refine
from mmer_jax.models import score_net
from mmer_jax.parity import checkout
from mmer_jax.parity import tolerances

REQUIRED = ('trains/singleTask/model/scoremodel.py', 'trains/singleTask/model/rcan.py',
            'trains/singleTask/model/imder.py',
            'trains/subNets/transformers_encoder/transformer.py',
            'trains/subNets/transformers_encoder/multihead_attention.py',
            'trains/subNets/transformers_encoder/position_embedding.py')
CONFIG_FILE = 'config/config.json'
DATASET = 'mosi'
# Their packages, imported as empty stand-ins (their __init__s pull in the trainer and BERT).
PACKAGES = ('trains', 'trains.singleTask', 'trains.singleTask.model', 'trains.subNets',
            'trains.subNets.transformers_encoder')
MODULES = {'scoremodel': 'trains.singleTask.model.scoremodel', 'rcan': 'trains.singleTask.model.rcan',
           'imder': 'trains.singleTask.model.imder',
           'position_embedding': 'trains.subNets.transformers_encoder.position_embedding'}

LETTERS = {'text': 'l', 'audio': 'a', 'visual': 'v'}  # their modality letters
MODALITY = {v: k for k, v in LETTERS.items()}
PAIRS = ('lv', 'la', 'va')  # their cat_lv, cat_la, cat_va
HEAD_NETWORKS = ('trans_l_with_a', 'trans_l_with_v', 'trans_a_with_l', 'trans_a_with_v',
                 'trans_v_with_l', 'trans_v_with_a', 'trans_l_mem', 'trans_a_mem', 'trans_v_mem',
                 'proj1', 'proj2', 'out_layer')
SCORE_LEVELS = ('embed', 'down1', 'down2', 'down3', 'down4', 'up4', 'up3', 'up2', 'up1')
NUM_LEVELS = 4  # their U-Net: dense5..7 belong to up4..up2
NUM_BLOCKS = 20  # their Group(num_blocks=20): body.20 is the group's closing conv
LENGTH, FRAMES, WIDTH = 48, 50, 32  # projected length (kernel 3, no padding), input frames, d
SIGMA = 25.0
DSM_EPS = 1e-5  # their loss_fn's eps (and ours: losses.draw_perturbation)
EM_EPS = 1e-3  # their Euler_Maruyama_sampler's eps
EM_STEPS = (10, 100)  # a short loop, and their num_steps
MISSING = 'audio'  # the recovered modality of the score / refinement checks (their score_a, rec_a)
BUFFERS = ('.version', '.embed_positions._float_tensor')

# -- the weight map --------------------------------------------------------------------------------

_LEAF_TO_TORCH = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'W': 'W',
                  'in_proj_kernel': 'in_proj_weight', 'in_proj_bias': 'in_proj_bias'}
_LEAF_TO_FLAX = {'weight': 'kernel', 'bias': 'bias', 'W': 'W', 'in_proj_weight': 'in_proj_kernel',
                 'in_proj_bias': 'in_proj_bias'}
_NORMS = ('gnorm', 'layer_norms_0', 'layer_norms_1', 'layer_norm')


def to_torch_layout(a):
  """Flax <-> PyTorch layout of one tensor (an involution): 2-D transposed, 3-D (2, 1, 0)."""
  a = np.asarray(a)
  if a.ndim == 2:
    return a.T.copy()
  if a.ndim == 3:
    return a.transpose(2, 1, 0).copy()
  return a.copy()


def _transformer_to_torch(path) -> str:
  """Our path inside a TransformerEncoder -> their name inside theirs."""
  head, *rest = path
  if head == 'layer_norm':
    return f'layer_norm.{_LEAF_TO_TORCH[rest[-1]]}'
  k = re.fullmatch(r'layers_(\d+)', head)[1]
  if rest[0].startswith('layer_norms_'):
    return f'layers.{k}.layer_norms.{rest[0].split("_")[-1]}.{_LEAF_TO_TORCH[rest[-1]]}'
  return '.'.join(['layers', k, *rest[:-1], _LEAF_TO_TORCH[rest[-1]]])


def _transformer_to_flax(parts):
  """Their name inside a TransformerEncoder (split) -> our path, or None for a buffer."""
  if parts[0] in ('version', 'embed_positions'):
    return None
  if parts[0] == 'layer_norm':
    return ('layer_norm', 'scale' if parts[1] == 'weight' else 'bias')
  layer, rest = f'layers_{parts[1]}', parts[2:]
  if rest[0] == 'layer_norms':
    return (layer, f'layer_norms_{rest[1]}', 'scale' if rest[2] == 'weight' else 'bias')
  return (layer, *rest[:-1], _LEAF_TO_FLAX[rest[-1]])


def _leaf_to_torch(path) -> str:
  """The last part of a name; a norm's scale is its weight."""
  return _LEAF_TO_TORCH[path[-1]]


def _score_to_torch(collection: str, path) -> str:
  if collection == 'constants':
    if tuple(path) != ('embed', 'fourier', 'W'):
      raise KeyError(path)
    return 'embed.0.W'
  level, sub, *rest = path
  if level == 'embed':
    return f'embed.1.{_leaf_to_torch(rest)}'
  up, n = level.startswith('up'), int(level[-1])
  if sub == 'attention':
    return f'attention_{"t" if up else ""}{n}.{_transformer_to_torch(rest)}'
  if sub in ('conv', 'conv_cond'):
    return f'{"t" if up else ""}conv{n}{"_cond" if sub == "conv_cond" else ""}.{_leaf_to_torch(rest)}'
  if sub == 'dense':
    return f'dense{2 * NUM_LEVELS + 1 - n if up else n}.dense.{_leaf_to_torch(rest)}'
  if sub == 'gnorm':
    return f'{"t" if up else ""}gnorm{n}.{_leaf_to_torch(rest)}'
  raise KeyError(path)


def _score_to_flax(parts):
  """Their ScoreNet name (split, prefix removed) -> (collection, path) or None (a buffer)."""
  head, tail = parts[0], parts[1:]
  if head == 'embed':
    if tail[0] == '0':
      return 'constants', ('embed', 'fourier', 'W')
    return 'params', ('embed', 'dense', _LEAF_TO_FLAX[tail[-1]])
  if m := re.fullmatch(r'(t?)conv(\d)(_cond)?', head):
    return 'params', (f'{"up" if m[1] else "down"}{m[2]}', 'conv_cond' if m[3] else 'conv',
                      _LEAF_TO_FLAX[tail[-1]])
  if m := re.fullmatch(r'dense(\d)', head):
    n = int(m[1])
    level = f'down{n}' if n <= NUM_LEVELS else f'up{2 * NUM_LEVELS + 1 - n}'
    return 'params', (level, 'dense', _LEAF_TO_FLAX[tail[-1]])
  if m := re.fullmatch(r'(t?)gnorm(\d)', head):
    return 'params', (f'{"up" if m[1] else "down"}{m[2]}', 'gnorm',
                      'scale' if tail[-1] == 'weight' else 'bias')
  if m := re.fullmatch(r'attention_(t?)(\d)', head):
    inner = _transformer_to_flax(tail)
    return None if inner is None else ('params', (f'{"up" if m[1] else "down"}{m[2]}', 'attention', *inner))
  raise KeyError('.'.join(parts))


def _refine_to_torch(path) -> str:
  leaf = _leaf_to_torch(path)
  if path[0] == 'conv_in':
    return f'0.{leaf}'
  if path[0] == 'conv_out':
    return f'2.{leaf}'
  if path[1] == 'conv':
    return f'1.body.{NUM_BLOCKS}.{leaf}'
  i = int(path[1].removeprefix('block_'))
  sub = {('conv1',): 'body.0', ('conv2',): 'body.2', ('ca', 'down'): 'body.3.conv_du.0',
         ('ca', 'up'): 'body.3.conv_du.2'}[tuple(path[2:-1])]
  return f'1.body.{i}.{sub}.{leaf}'


def _refine_to_flax(parts):
  leaf = _LEAF_TO_FLAX[parts[-1]]
  if parts[0] == '0':
    return ('conv_in', leaf)
  if parts[0] == '2':
    return ('conv_out', leaf)
  i = int(parts[2])
  if i == NUM_BLOCKS:
    return ('group', 'conv', leaf)
  sub = {'0': ('conv1',), '2': ('conv2',)}.get(parts[4]) or ('ca', {'0': 'down', '2': 'up'}[parts[6]])
  return ('group', f'block_{i}', *sub, leaf)


def authors_name(collection: str, path) -> str:
  """Our variable (collection, path tuple) -> the name of their IMDER state-dict tensor."""
  top, *rest = path
  if top.startswith('score_'):
    return f'score_{LETTERS[top.removeprefix("score_")]}.{_score_to_torch(collection, rest)}'
  if collection != 'params':
    raise KeyError((collection, path))
  if top.startswith('refine_'):
    return f'rec_{LETTERS[top.removeprefix("refine_")]}.{_refine_to_torch(rest)}'
  if top.startswith('cat_'):
    return f'{top}.{_leaf_to_torch(rest)}'
  if top == 'projections':
    return f'{rest[1]}.{_leaf_to_torch(rest)}'  # projections/conv/proj_l/kernel
  if top == 'head':
    net, *inner = rest
    if net.startswith('trans_'):
      return f'{net}.{_transformer_to_torch(inner)}'
    return f'{net}.{_leaf_to_torch(inner)}'
  raise KeyError((collection, path))


def our_path(name: str):
  """Their IMDER state-dict name -> our (collection, path tuple), or None for a buffer; a
  KeyError for a name that is not theirs."""
  try:
    return _our_path(name.split('.'))
  except (KeyError, IndexError, ValueError, TypeError) as e:
    raise KeyError(f'not a tensor of their IMDER: {name}') from e


def _our_path(parts):
  top, rest = parts[0], parts[1:]
  if top in ('proj1', 'proj2', 'out_layer') or re.fullmatch(r'(cat_(lv|la|va)|proj_[lav])', top):
    if len(rest) != 1:
      raise KeyError(parts)
  if m := re.fullmatch(r'score_([lav])', top):
    target = _score_to_flax(rest)
    return None if target is None else (target[0], (f'score_{MODALITY[m[1]]}', *target[1]))
  if m := re.fullmatch(r'rec_([lav])', top):
    return 'params', (f'refine_{MODALITY[m[1]]}', *_refine_to_flax(rest))
  if re.fullmatch(r'cat_(lv|la|va)', top):
    return 'params', (top, 'conv', _LEAF_TO_FLAX[rest[-1]])
  if re.fullmatch(r'proj_[lav]', top):
    return 'params', ('projections', 'conv', top, _LEAF_TO_FLAX[rest[-1]])
  if top.startswith('trans_'):
    inner = _transformer_to_flax(rest)
    return None if inner is None else ('params', ('head', top, *inner))
  if top in ('proj1', 'proj2', 'out_layer'):
    return 'params', ('head', top, _LEAF_TO_FLAX[rest[-1]])
  raise KeyError(parts)


def their_prefix(module: str) -> str:
  """Our top-level module -> its name in their IMDER ('' for the head: its networks are
  top-level there)."""
  if module.startswith('score_'):
    return f'score_{LETTERS[module.removeprefix("score_")]}'
  if module.startswith('refine_'):
    return f'rec_{LETTERS[module.removeprefix("refine_")]}'
  if module in ('head', 'projections'):
    return ''
  return module  # cat_lv, cat_la, cat_va


def to_authors(variables) -> dict[str, np.ndarray]:
  """Our variables {'params', 'constants'} -> their IMDER state dict (parameters only)."""
  out = {}
  for collection, tree in variables.items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      out[authors_name(collection, path)] = to_torch_layout(leaf)
  return out


def from_authors(state_dict, module: str | None = None) -> dict:
  """Their state dict (or its gradients) -> our variables {'params', 'constants'}.

  With `module` (ours, e.g. 'score_audio') the names are those of their submodule (e.g.
  `model.score_a.named_parameters()`) and the result is that module's variables. Their buffers
  are skipped, and so are parameters without a gradient (None).
  """
  prefix = their_prefix(module) if module else ''
  flat = {}
  for name, value in state_dict.items():
    if value is None:
      continue
    target = our_path(f'{prefix}.{name}' if prefix else name)
    if target is None:
      continue
    collection, path = target
    if module:
      if path[0] != module:
        raise KeyError(f'{name} is not in {module}')
      path = path[1:]
    flat[(collection, *path)] = to_torch_layout(value)
  return traverse_util.unflatten_dict(flat)


def to_composite(variables, modalities) -> dict:
  """Per-network variables (score_<m>, refine_<m>, ...) -> `models/imder.py`'s layout, where
  the score and refinement networks of `modalities` are stacked on a leading axis."""
  out = {}
  for collection, tree in variables.items():
    tree = dict(tree)
    for kind in ('score', 'refine'):
      if f'{kind}_{modalities[0]}' in tree:
        stacked = [tree.pop(f'{kind}_{m}') for m in modalities]
        tree[kind] = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *stacked)
    out[collection] = tree
  return out


def from_composite(variables, modalities) -> dict:
  """`models/imder.py`'s variables -> per-network ones (the inverse of `to_composite`)."""
  out = {}
  for collection, tree in variables.items():
    tree = dict(tree)
    for kind in ('score', 'refine'):
      if kind in tree:
        stacked = tree.pop(kind)
        for k, m in enumerate(modalities):
          tree[f'{kind}_{m}'] = jax.tree_util.tree_map(lambda x, k=k: np.asarray(x)[k], stacked)
    out[collection] = tree
  return out


# -- our modules -----------------------------------------------------------------------------------


def modules(nlevels: int, num_outputs: int = 1):
  """Ours at the authors' sizes: ScoreNet, RefineNet, PairCondition, IMDerProjections, head."""
  return {'score': score_net.ScoreNet(sigma=SIGMA), 'refine': imder_refine.RefineNet(),
          'cat': imder_head.PairCondition(WIDTH), 'proj': imder_head.IMDerProjections(WIDTH),
          'head': imder_head.IMDerFusionHead(num_outputs=num_outputs, nlevels=nlevels)}


def _features(feature_dims, batch: int, dtype=jnp.float32):
  return {m: jnp.zeros((batch, FRAMES, d), dtype) for m, d in zip(('text', 'audio', 'visual'), feature_dims)}


def init_variables(key, *, feature_dims, nlevels: int, num_outputs: int = 1) -> dict:
  """Every network of their IMDER in our variables layout ({'params', 'constants'}).

  Each kind of network is initialised by its own compiled init (one compilation for the three
  score networks, not one program holding everything, which compiles for minutes)."""
  nets = modules(nlevels, num_outputs)
  x = jnp.zeros((1, LENGTH, WIDTH))
  keys = iter(jax.random.split(key, 12))
  score_init = jax.jit(lambda k: nets['score'].init(k, x, jnp.ones((1,)), x))
  refine_init = jax.jit(lambda k: nets['refine'].init(k, x)['params'])
  cat_init = jax.jit(lambda k: nets['cat'].init(k, x, x)['params'])
  params, constants = {}, {}
  for m in LETTERS:
    v = score_init(next(keys))
    params[f'score_{m}'], constants[f'score_{m}'] = v['params'], v['constants']
    params[f'refine_{m}'] = refine_init(next(keys))
  for pair in PAIRS:
    params[f'cat_{pair}'] = cat_init(next(keys))
  params['projections'] = {'conv': jax.jit(lambda k: nets['proj'].init(
      k, _features(feature_dims, 1), deterministic=True)['params'])(next(keys))}
  projected = {m: x for m in LETTERS}
  params['head'] = jax.jit(lambda k: nets['head'].init(k, projected, deterministic=True)['params'])(next(keys))
  return {'params': params, 'constants': constants}


# -- the authors' side -----------------------------------------------------------------------------


class _NoBert:
  """Stands in for their BertTextEncoder (transformers is not needed: use_bert is False)."""

  def __init__(self, *args, **kwargs):
    raise RuntimeError('the IMDer parity check runs with use_bert=False')


def import_authors(repo: str) -> dict:
  """Their model modules, imported from the checkout under empty stand-ins of their packages."""
  root = os.path.abspath(os.path.expanduser(repo))
  with checkout.on_path(root, REQUIRED):
    for pkg in PACKAGES:
      stub = types.ModuleType(pkg)
      stub.__path__ = [os.path.join(root, *pkg.split('.'))]
      sys.modules[pkg] = stub
    sys.modules['trains.subNets'].BertTextEncoder = _NoBert
    out = {alias: importlib.import_module(name) for alias, name in MODULES.items()}
  out['imder'].device = 'cpu'  # their module-level device = 'cuda' (marginal_prob_std, diffusion_coeff)
  return out


def authors_args(repo: str, dataset: str = DATASET) -> argparse.Namespace:
  """The args their IMDER.__init__ reads, from their config/config.json (`dataset`: mosi by
  default, or mosei), without BERT."""
  path = os.path.join(os.path.expanduser(repo), CONFIG_FILE)
  if not os.path.exists(path):
    raise SystemExit(f'--authors_repo={repo}: not the expected checkout, it lacks {CONFIG_FILE}')
  with open(path, encoding='utf-8') as f:
    config = json.load(f)
  fields = dict(config['imder']['commonParams'])
  fields.update(config['imder']['datasetParams'][dataset])
  data = config['datasetCommonParams'][dataset]
  fields.update(data.get('aligned', data.get('unaligned')))
  fields.update(use_bert=False, use_finetune=False, train_mode='regression')
  return argparse.Namespace(**fields)


@contextlib.contextmanager
def authors_precision(torch, mods, model, dtype):
  """Their code in `dtype`: for float64 the float32 spots are promoted (module docstring)."""
  pe = mods['position_embedding'].SinusoidalPositionalEmbedding

  def clear_tables():
    for module in model.modules():
      if isinstance(module, pe):
        module.weights = {}

  if dtype != np.float64:
    clear_tables()
    yield
    return
  original_table = pe.get_embedding
  original_float = torch.Tensor.float

  def table(*args, **kwargs):
    with unittest.mock.patch.object(torch, 'float', torch.float64):
      return original_table(*args, **kwargs)

  def keep_float64(self, *args, **kwargs):
    return self if self.dtype == torch.float64 else original_float(self, *args, **kwargs)

  default = torch.get_default_dtype()
  clear_tables()
  torch.set_default_dtype(torch.float64)
  try:
    with unittest.mock.patch.object(pe, 'get_embedding', staticmethod(table)), \
         unittest.mock.patch.object(torch.Tensor, 'float', keep_float64):
      yield
  finally:
    torch.set_default_dtype(default)
    clear_tables()


@contextlib.contextmanager
def fed_noise(torch, *, randn=(), randn_like=(), rand=()):
  """torch.randn / randn_like / rand return the given arrays, in order, and fail when one is
  asked for beyond them or with another shape; all must have been consumed at the end."""
  queues = {'randn': list(randn), 'randn_like': list(randn_like), 'rand': list(rand)}

  def source(kind):
    def draw(*args, **kwargs):
      if not queues[kind]:
        raise AssertionError(f'their code asked for more torch.{kind} than the harness fed')
      value = queues[kind].pop(0)
      if kind == 'randn_like':
        want = tuple(args[0].shape)
      else:
        want = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)
      if tuple(value.shape) != want:
        raise AssertionError(f'torch.{kind}{want}: the harness has {tuple(value.shape)} next')
      return torch.from_numpy(np.ascontiguousarray(value))
    return draw

  with unittest.mock.patch.object(torch, 'randn', source('randn')), \
       unittest.mock.patch.object(torch, 'randn_like', source('randn_like')), \
       unittest.mock.patch.object(torch, 'rand', source('rand')):
    yield
  left = {k: len(v) for k, v in queues.items() if v}
  if left:
    raise AssertionError(f'their code left fed noise unused: {left}')


def uniform_preimage(torch, t, eps: float, dtype):
  """u with u * (1 - eps) + eps == t exactly in torch's arithmetic of `dtype` (their loss_fn)."""
  tdtype = torch.float64 if dtype == np.float64 else torch.float32
  t = np.asarray(t, dtype)
  u = ((t.astype(np.float64) - eps) / (1. - eps)).astype(dtype)
  for _ in range(8):
    got = (torch.from_numpy(u) * (1. - eps) + eps).numpy()
    bad = got != t
    if not bad.any():
      return u
    u = np.where(bad, np.nextafter(u, np.where(got < t, np.inf, -np.inf).astype(dtype)), u).astype(dtype)
  raise AssertionError(f'no {tdtype} u reproduces t = {t[bad]}')


def ncl(x):
  """Ours [B, L, C] -> their [B, C, L] (and back: the same transpose)."""
  return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 1))


# -- the run --------------------------------------------------------------------------------------


def _cast(tree, dtype):
  return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), tree)


def jittered(variables, seed: int) -> dict:
  """Our initialisation plus N(0, 0.02^2) on every parameter (zero biases, unit norms and
  MulT's zero attention biases would leave parts of the map untested), constants as drawn."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
      lambda x: (np.asarray(x) + 0.02 * rng.standard_normal(x.shape)).astype(np.float32),
      variables['params'])
  return {'params': params, 'constants': jax.tree_util.tree_map(np.asarray, variables['constants'])}


def draw_inputs(seed: int, batch: int, feature_dims) -> dict:
  """The compared batch (float32): score inputs, the DSM draw, EM noise, head features."""
  rng = np.random.default_rng(seed + 1)
  f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
  out = {'x': f32(batch, LENGTH, WIDTH), 'condition': f32(batch, LENGTH, WIDTH),
         't': rng.uniform(0.05, 1.0, batch).astype(np.float32),
         'target': f32(batch, LENGTH, WIDTH), 'label': rng.uniform(-3, 3, (batch, 1)).astype(np.float32)}
  out.update({m: f32(batch, FRAMES, d) for m, d in zip(('text', 'audio', 'visual'), feature_dims)})
  return out


def em_noise(key, condition, num_steps: int, dtype):
  """Our EM's noise: the initial N(0, I), each step's N(0, I), and the condition noise that
  `conditioning.perturbed_condition_score` draws at each grid time (`condition_noise`)."""
  init_key, step_key, cond_key = jax.random.split(key, 3)
  shape = condition.shape
  init = jax.random.normal(init_key, shape, dtype)
  steps = jax.random.normal(step_key, (num_steps,) + shape, dtype)
  times = jnp.linspace(1.0, EM_EPS, num_steps, dtype=dtype)  # sampling._euler_maruyama_scan's grid
  conds = jnp.stack([conditioning.condition_noise(cond_key, jnp.full(shape[:1], s, dtype), shape, dtype)
                     for s in times])
  return {'init': np.asarray(init), 'steps': np.asarray(steps), 'conditions': np.asarray(conds),
          'times': np.asarray(times), 'cond_key': cond_key}


def score_loss(network, sde, x, t, z, condition):
  """Ours: the batch mean of the per-example DSM loss, the condition perturbed with the same z
  (what their loss_fn returns). network(x, t, condition) is the conditional score."""
  perturbed = conditioning.perturb_condition(condition, sde.marginal_std(t), z)
  per_example = losses.score_matching_loss_at(lambda xt, s: network(xt, s, perturbed), x, t, z, sde)
  return jnp.mean(per_example)


def em_sample(network, sde, condition, init_noise, steps, cond_key):
  """Ours: Euler-Maruyama from init_noise * std(1) with the given step noise, the condition
  perturbed at each step by `conditioning.perturbed_condition_score` (keyed by cond_key)."""
  init = init_noise * sde.marginal_std(jnp.ones(init_noise.shape[:1], init_noise.dtype))[:, None, None]
  score_fn = conditioning.perturbed_condition_score(network, condition, cond_key, sde)
  return sampling.euler_maruyama(score_fn, sde, init, steps, eps=EM_EPS)


class _Ours:
  """Our side's compiled functions (jit once per dtype by the arguments' dtypes)."""

  def __init__(self, nets):
    self.sde = sde_lib.VESDE(SIGMA)
    score, refine, cat, proj, head = (nets[k] for k in ('score', 'refine', 'cat', 'proj', 'head'))
    sde = self.sde

    def dsm(params, constants, x, t, z, condition):
      variables = {'params': params, 'constants': constants}
      return score_loss(lambda *a: score.apply(variables, *a), sde, x, t, z, condition)

    def em(variables, condition, init_noise, steps, cond_key):
      network = lambda x, t, c: score.apply(variables, x, t, c)  # noqa: E731
      return em_sample(network, sde, condition, init_noise, steps, cond_key)

    def rec_mse(params, x, target):
      pred = refine.apply({'params': params}, x)
      return jnp.mean(jnp.square(pred - target)), pred

    def head_l1(params, projected, label):
      out, aux = head.apply({'params': params}, projected, deterministic=True, return_aux=True)
      return jnp.mean(jnp.abs(out - label)), (out, aux)

    self.score = jax.jit(score.apply)
    self.dsm = jax.jit(jax.value_and_grad(dsm))
    self.em = jax.jit(em)
    self.rec = jax.jit(jax.value_and_grad(rec_mse, has_aux=True))
    self.cat = jax.jit(cat.apply)
    self.proj = jax.jit(lambda v, f: proj.apply(v, f, deterministic=True))
    self.head = jax.jit(jax.value_and_grad(head_l1, has_aux=True))


def _authors_side(torch, mods, model, weights, inputs, dtype, em_noises, dsm_draw):
  tdtype = torch.float64 if dtype == np.float64 else torch.float32
  model.to(tdtype)
  sd = model.state_dict()
  missing = set(sd) - set(weights)
  if any(not k.endswith(BUFFERS) for k in missing) or set(weights) - set(sd):
    raise AssertionError(f'weight map and their state dict differ: {sorted(missing)[:5]}, '
                         f'{sorted(set(weights) - set(sd))[:5]}')
  sd.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
  model.load_state_dict(sd, strict=True)
  model.eval()
  tensor = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype)))  # noqa: E731
  num = lambda x: x.detach().numpy().astype(np.float64)  # noqa: E731
  letter = LETTERS[MISSING]
  score_model = getattr(model, f'score_{letter}')
  out = {}
  with authors_precision(torch, mods, model, dtype):
    with torch.no_grad():
      out['score'] = ncl(num(score_model(tensor(ncl(inputs['x'])), tensor(inputs['t']),
                                         tensor(ncl(inputs['condition'])))))
    # the score loss, its gradients
    model.zero_grad()
    t, z = dsm_draw
    u = uniform_preimage(torch, t, DSM_EPS, dtype)
    with fed_noise(torch, rand=[u], randn_like=[ncl(z)]):
      loss = mods['scoremodel'].loss_fn(score_model, tensor(ncl(inputs['x'])), model.marginal_prob_std_fn,
                                        condition=tensor(ncl(inputs['condition'])))
    loss.backward()
    out['loss_score'] = loss.item()
    out['grad_score'] = {k: p.grad.detach().numpy().copy() for k, p in score_model.named_parameters()
                         if p.grad is not None}
    # Euler-Maruyama
    for n, noise in em_noises.items():
      randn = [ncl(noise['init'])]
      for c in noise['conditions']:
        randn.append(ncl(c))
      with fed_noise(torch, randn=randn, randn_like=[ncl(s) for s in noise['steps']]):
        sample = mods['scoremodel'].Euler_Maruyama_sampler(
            score_model, model.marginal_prob_std_fn, model.diffusion_coeff_fn, batch_size=len(inputs['x']),
            num_steps=n, device='cpu', condition=tensor(ncl(inputs['condition'])), eps=EM_EPS)
      out[f'em{n}'] = ncl(num(sample))
      out[f'em{n}_times'] = torch.linspace(1., EM_EPS, n).numpy().astype(np.float64)
    # refinement and its MSE
    rec = getattr(model, f'rec_{letter}')
    model.zero_grad()
    pred = rec(tensor(ncl(inputs['x'])))
    mse = model.MSE(pred, tensor(ncl(inputs['target'])))
    mse.backward()
    out['refine'] = ncl(num(pred))
    out['loss_rec'] = mse.item()
    out['grad_refine'] = {k: p.grad.detach().numpy().copy() for k, p in rec.named_parameters()}
    # the projections, a pair condition, the head and its L1 loss
    model.zero_grad()
    text, audio, visual = (tensor(inputs[m]) for m in ('text', 'audio', 'visual'))
    with torch.no_grad():
      proj = {'text': model.proj_l(text.transpose(1, 2)), 'audio': model.proj_a(audio.transpose(1, 2)),
              'visual': model.proj_v(visual.transpose(1, 2))}
      out['cat_lv'] = ncl(num(model.cat_lv(torch.cat([proj['text'], proj['visual']], dim=1))))
    out['proj'] = {m: ncl(num(p)) for m, p in proj.items()}
    res = model(text, audio, visual, num_modal=3)
    l1 = torch.nn.L1Loss()(res['M'], tensor(inputs['label']))
    l1.backward()
    out['head'] = {'Feature_t': num(res['Feature_t']), 'Feature_a': num(res['Feature_a']),
                   'Feature_v': num(res['Feature_v']), 'Feature_f': num(res['Feature_f']),
                   'M': num(res['M'])}
    out['loss_l1'] = l1.item()
    out['grad_head'] = {k: p.grad.detach().numpy().copy() for k, p in model.named_parameters()
                        if k.split('.')[0] in HEAD_NETWORKS}
  return out


def run(authors_repo: str, *, precisions=('float32', 'float64'), seed: int = 0, batch_size: int = 8,
        em_steps=EM_STEPS) -> dict:
  torch = checkout.require_torch()
  jax.config.update('jax_enable_x64', True)
  torch.manual_seed(seed)
  mods = import_authors(authors_repo)
  args = authors_args(authors_repo)
  feature_dims = tuple(args.feature_dims)
  model = mods['imder'].IMDER(args)
  nets = modules(args.nlevels)
  variables32 = jittered(init_variables(jax.random.PRNGKey(seed), feature_dims=feature_dims,
                                        nlevels=args.nlevels), seed)
  inputs32 = draw_inputs(seed, batch_size, feature_dims)
  ours = _Ours(nets)
  score_key, refine_key = f'score_{MISSING}', f'refine_{MISSING}'

  sections = {}
  for precision in precisions:
    dtype = np.dtype(precision).type
    tol = tolerances.TOLERANCES[precision]
    f, g = tol['forward'], tol['gradient']
    variables = _cast(variables32, dtype)
    inputs = _cast(inputs32, dtype)
    key = jax.random.PRNGKey(seed + 2)
    dsm_key, em_key = jax.random.split(key)
    t, z = losses.draw_perturbation(dsm_key, jnp.asarray(inputs['x']), ours.sde, eps=DSM_EPS)
    t, z = np.asarray(t), np.asarray(z)
    em_noises = {n: em_noise(jax.random.fold_in(em_key, n), inputs['condition'], n, dtype) for n in em_steps}
    theirs = _authors_side(torch, mods, model, to_authors(variables), inputs, dtype, em_noises, (t, z))

    score_vars = {'params': variables['params'][score_key], 'constants': variables['constants'][score_key]}
    q = {}
    score = ours.score(score_vars, inputs['x'], inputs['t'], inputs['condition'])
    if np.asarray(score).dtype != dtype:
      raise AssertionError(f'ours computed in {np.asarray(score).dtype}, not {precision}')
    q['score/output'] = tolerances.difference(score, theirs['score'], f)
    loss, grads = ours.dsm(score_vars['params'], score_vars['constants'], inputs['x'], t, z, inputs['condition'])
    q['loss/score'] = tolerances.difference(loss, theirs['loss_score'], f)
    their_grads = from_authors(theirs['grad_score'], score_key)['params']
    q.update(tolerances.compare_groups(grads, their_grads, SCORE_LEVELS, g, 'gradient/score'))
    for n, noise in em_noises.items():
      q[f'em{n}/time_grid'] = tolerances.difference(noise['times'], theirs[f'em{n}_times'], f)
      sample = ours.em(score_vars, inputs['condition'], noise['init'], noise['steps'], noise['cond_key'])
      q[f'em{n}/sample'] = tolerances.difference(sample, theirs[f'em{n}'], f)
    (mse, pred), rec_grads = ours.rec(variables['params'][refine_key], inputs['x'], inputs['target'])
    q['refine/output'] = tolerances.difference(pred, theirs['refine'], f)
    q['loss/rec'] = tolerances.difference(mse, theirs['loss_rec'], f)
    their_rec = from_authors(theirs['grad_refine'], refine_key)['params']
    q.update(tolerances.compare_groups(rec_grads, their_rec, ('conv_in', 'group', 'conv_out'), g, 'gradient/refine'))
    features = {m: inputs[m] for m in ('text', 'audio', 'visual')}
    projected = ours.proj({'params': variables['params']['projections']['conv']}, features)
    for m in ('text', 'audio', 'visual'):
      q[f'projection/{m}'] = tolerances.difference(projected[m], theirs['proj'][m], f)
    cond = ours.cat({'params': variables['params']['cat_lv']}, projected['text'], projected['visual'])
    q['condition/cat_lv'] = tolerances.difference(cond, theirs['cat_lv'], f)
    (l1, (out, aux)), head_grads = ours.head(variables['params']['head'], projected, inputs['label'])
    for ours_name, their_name in (('text', 'Feature_t'), ('audio', 'Feature_a'), ('visual', 'Feature_v'),
                                  ('fused', 'Feature_f')):
      q[f'head/{their_name}'] = tolerances.difference(aux[ours_name], theirs['head'][their_name], f)
    q['head/M'] = tolerances.difference(out, theirs['head']['M'], f)
    q['loss/l1'] = tolerances.difference(l1, theirs['loss_l1'], f)
    their_head = from_authors(theirs['grad_head'])['params']['head']
    q.update(tolerances.compare_groups(head_grads, their_head, HEAD_NETWORKS, g, 'gradient/head'))
    sections[precision] = q

  return tolerances.report(
      'imder', sections, authors_repo=authors_repo, authors_commit=checkout.commit(authors_repo),
      options={'dataset': DATASET, 'use_bert': False, 'train_mode': 'regression', 'nlevels': args.nlevels,
               'missing': MISSING, 'em_steps': list(em_steps), 'em_eps': EM_EPS, 'dsm_eps': DSM_EPS},
      batch={'size': batch_size, 'length': LENGTH, 'channels': WIDTH, 'frames': FRAMES,
             'feature_dims': list(feature_dims), 'score_t': np.asarray(inputs32['t']).tolist()},
      notes=['dropout off on both sides (their IMDER in eval mode, ours deterministic)',
             'noise: ours drawn by JAX, fed to theirs through patched torch.rand / randn / randn_like',
             "float64: their float32 spots (position table, attention softmax, the sampler's time "
             'grid) promoted to float64; float32 unpatched',
             "their package __init__s (trainer, BERT) bypassed: model files imported under stand-in "
             "packages; their module device 'cuda' set to 'cpu'"])
