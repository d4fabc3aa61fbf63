"""MMGCN against the authors' code (hujingwen6666/MMGCN), weight for weight.

Their `DialogueGCNModel` (`model.py`, with `MM_GCN` and `GCNII_lyc`) is imported from the
checkout at run time and built as their `train.py` builds it for `run.sh`'s IEMOCAP line (64
GCNII layers, `variant=True`, dropout 0, eval mode). Ours is `models/mmgcn.py`'s `MMGCN` with the
options that compute the same (`OUR_OPTIONS`). Both run on one batch of dialogues of equal length
in float32 and float64 (`tolerances.TOLERANCES`): encoders, node features, every adjacency entry,
GCN output, log-probabilities, loss and gradients. `authors_node_index` maps our nodes to theirs,
`to_authors` / `from_authors` the weights. Running their code as it is needs four things, none a
change of what it computes: stand-in modules for the import (`stub_modules`), `.cuda()` as the
identity (`authors_runtime`), their legacy index (`legacy_index`) and, in float64, torch's
default dtype float64.

What is compared, the weight map and the documented differences: docs/mmgcn_parity.md.
"""

from __future__ import annotations

import contextlib
import sys
import types
import unittest.mock

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from mmer_jax.data import graphs
from mmer_jax.methods import mmgcn as mmgcn_method
from mmer_jax.models import mmgcn
from mmer_jax.parity import checkout
from mmer_jax.parity import tolerances
from mmer_jax.parity import layouts

REQUIRED = ('model.py', 'model_mm.py', 'model_GCN.py')
CLASSES = {'DialogueGCNModel': 'model:DialogueGCNModel'}
# Modules their files import at the top that this path never uses: {name: attributes imported}.
STUBS = {'torch_geometric': (), 'torch_geometric.nn': ('RGCNConv', 'GraphConv'), 'ipdb': ('set_trace',)}

MODALITIES = ('audio', 'visual', 'text')  # ours, library order; theirs a, v, l: the same order
LETTERS = {'audio': 'a', 'visual': 'v', 'text': 'l'}
FEATURE_DIMS = {'audio': 1582, 'visual': 342, 'text': 100}  # their train.py's IEMOCAP sizes
D_E = 100  # their D_e: the text LSTM's size per direction (our width = 2 D_e)
GRAPH_HIDDEN = 100
NUM_SPEAKERS = 2
NUM_CLASSES = 6
NUM_LAYERS = 64  # their MM_GCN(nlayers=64), hard-coded
TURNS = 7  # turns of every compared dialogue (equal lengths: see the module docstring)
ALL_LAYERS = 'gcn/layers'  # the worst of the per-layer GCN gradient comparisons
# The self-loop weights 1 - arccos(0.99999 cos(x, x)) / pi: arccos' slope there is
# 1 / sqrt(1 - 0.99999^2) ~ 224, so the cosine's float32 rounding (~6e-8) moves a weight by up to
# ~1e-5 on either side (measured: each side's float32 self-loops against its own float64 ones,
# the report's `self_loops_float32_vs_float64`). The gradient tolerance covers it; every other
# adjacency entry keeps the forward one.
SELF_LOOP_TOLERANCE = {'float32': tolerances.TOLERANCES['float32']['gradient'],
                       'float64': tolerances.TOLERANCES['float64']['forward']}

# Their DialogueGCNModel's arguments, as train.py passes them for run.sh's IEMOCAP line (dropout 0).
AUTHORS_OPTIONS = {
    'base_model': 'LSTM', 'D_g': 150, 'D_p': 150, 'D_e': D_E, 'D_h': 100, 'D_a': 100,
    'graph_hidden_size': GRAPH_HIDDEN, 'n_speakers': NUM_SPEAKERS, 'max_seq_len': 200,
    'window_past': 10, 'window_future': 10, 'n_classes': NUM_CLASSES, 'dropout': 0.0,
    'nodal_attention': True, 'no_cuda': True, 'graph_type': 'MMGCN', 'graph_construct': 'direct',
    'use_residue': True, 'modals': 'avl', 'att_type': 'concat_subsequently', 'av_using_lstm': False,
    'Deep_GCN_nlayers': 4, 'dataset': 'IEMOCAP', 'use_speaker': True, 'use_modal': False,
}
# Ours: models.mmgcn.MMGCN's fields that compute what theirs does.
OUR_OPTIONS = {
    'modalities': MODALITIES, 'use_modalities': MODALITIES, 'num_classes': NUM_CLASSES,
    'width': 2 * D_E, 'fusion': 'graph', 'speaker_nodes': 'text', 'num_speakers': NUM_SPEAKERS,
    'gcn_hidden': GRAPH_HIDDEN, 'gcn_layers': NUM_LAYERS, 'gcn_concat_input': True,
    'cross_modal_weight': 1.0, 'cos_scale': 0.99999, 'dropout': 0.0,
}
# Their parameters outside this forward path (module prefixes): no counterpart, no gradient.
UNUSED = ('att_model.', 'gatedatt.', 'graph_model.a_fc.', 'graph_model.v_fc.', 'graph_model.l_fc.',
          'graph_model.feature_fc.', 'graph_model.final_fc.', 'graph_model.modal_embeddings.',
          'graph_model.a_spk_embs.', 'graph_model.v_spk_embs.', 'graph_model.l_spk_embs.')


# -- the weight map --------------------------------------------------------------------------------


def entries(num_layers: int = NUM_LAYERS):
  """(our layer path, their parameter prefix, kind) of every mapped layer."""
  out = [(f'encoder_{m}', f'linear_{LETTERS[m]}', 'linear') for m in MODALITIES]
  for k in range(2):
    for direction, suffix in (('forward', ''), ('backward', '_reverse')):
      out.append((f'text_lstm_{k}_{direction}', f'lstm_l.*_l{k}{suffix}', 'lstm'))
  out.append(('speaker_embedding', 'graph_model.speaker_embeddings', 'embedding'))
  out.append(('gcn/input', 'graph_model.graph_net.fcs.0', 'linear'))
  out += [(f'gcn/layer_{i}', f'graph_model.graph_net.convs.{i - 1}', 'kernel')
          for i in range(1, num_layers + 1)]
  out.append(('classifier', 'smax_fc', 'linear'))
  return out


def _lstm_name(prefix: str, name: str) -> str:
  """'lstm_l.*_l1_reverse' and 'weight_ih_l0' -> 'lstm_l.weight_ih_l1_reverse'."""
  module, pattern = prefix.split('.')
  return f'{module}.{name.removesuffix("_l0")}{pattern.removeprefix("*")}'


def _get(tree, path: str):
  for key in path.split('/'):
    tree = tree[key]
  return tree


def to_authors(params, num_layers: int = NUM_LAYERS) -> dict[str, np.ndarray]:
  """Our parameters -> their state-dict tensors (the mapped ones; LSTM bias_hh = 0)."""
  out = {}
  for path, prefix, kind in entries(num_layers):
    layer = _get(params, path)
    if kind == 'linear':
      out.update({f'{prefix}.{k}': v for k, v in layouts.linear_from_flax(layer).items()})
    elif kind == 'lstm':
      out.update({_lstm_name(prefix, k): v for k, v in layouts.lstm_from_flax(layer).items()})
    elif kind == 'embedding':
      out[f'{prefix}.weight'] = np.asarray(layer['embedding']).copy()
    else:
      out[f'{prefix}.weight'] = np.asarray(layer['kernel']).copy()
  return out


def from_authors(state_dict, num_layers: int = NUM_LAYERS, *, gradient: bool = False) -> dict:
  """Their state dict (or its gradients) -> our parameter tree; their unused tensors are skipped.

  With `gradient`, an LSTM's bias gradient is d/dbias_ih alone (`layouts.lstm_to_flax`)."""
  get = lambda name: np.asarray(state_dict[name])  # noqa: E731
  out = {}
  for path, prefix, kind in entries(num_layers):
    if kind == 'linear':
      out[path] = layouts.linear_to_flax(get(f'{prefix}.weight'), get(f'{prefix}.bias'))
    elif kind == 'lstm':
      names = ('weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0')
      args = [get(_lstm_name(prefix, n)) for n in names]
      out[path] = layouts.lstm_to_flax(*args, gradient=gradient)
    elif kind == 'embedding':
      out[path] = {'embedding': get(f'{prefix}.weight').copy()}
    else:
      out[path] = {'kernel': get(f'{prefix}.weight').copy()}
  return traverse_util.unflatten_dict(out, sep='/')


def gradient_groups(num_layers: int = NUM_LAYERS) -> tuple[str, ...]:
  """The compared parameter groups (each GCN layer on its own, reported as their worst)."""
  groups = [f'encoder_{m}' for m in MODALITIES]
  groups += [f'text_lstm_{k}_{d}' for k in range(2) for d in ('forward', 'backward')]
  groups += ['speaker_embedding', 'gcn/input']
  groups += [f'gcn/layer_{i}' for i in range(1, num_layers + 1)]
  return (*groups, 'classifier')


# -- graphs and layouts ----------------------------------------------------------------------------


def authors_node_index(graph, turn_mask) -> np.ndarray:
  """Their row of each of our nodes [S, N] (-1 for padding nodes): m * total + offset_b + t.

  Ours: node `utterance` = b * L + t (one shard, b the dialogue), `modality` m. Theirs: the real
  turns of all dialogues concatenated (dialogue-major), once per modality."""
  turn_mask = np.asarray(turn_mask, bool)
  lengths = turn_mask.sum(axis=1)
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  total, max_turns = int(lengths.sum()), turn_mask.shape[1]
  utterance = np.asarray(graph.nodes['utterance'])
  b, t = utterance // max_turns, utterance % max_turns
  index = np.asarray(graph.nodes['modality']) * total + offsets[b] + t
  return np.where(np.asarray(graph.nodes['real']), index, -1)


def dense_adjacency(weights, graph, turn_mask) -> np.ndarray:
  """Our normalised edge weights [S, E] -> their dense [3 N, 3 N] layout: entry [r, s] is the
  weight of the edge s -> r (their `adj @ h` sums adj[r, s] h[s]; ours sums into receivers)."""
  index = authors_node_index(graph, turn_mask)
  size = len(MODALITIES) * int(np.asarray(turn_mask, bool).sum())
  dense = np.zeros((size, size), np.float64)
  weights = np.asarray(weights, np.float64)
  real = np.asarray(graph.edges['real'])
  for s in range(weights.shape[0]):
    on = real[s]
    rows = index[s][np.asarray(graph.receivers)[s][on]]
    cols = index[s][np.asarray(graph.senders)[s][on]]
    np.add.at(dense, (rows, cols), weights[s][on])
  if np.any(np.asarray(weights)[~real] != 0):
    raise AssertionError('a padding edge has a non-zero weight')
  return dense


def to_authors_nodes(values, graph, turn_mask) -> np.ndarray:
  """Our per-node values [S, N, F] -> their row order [3 N, F] (padding nodes dropped)."""
  index = authors_node_index(graph, turn_mask)
  values = np.asarray(values, np.float64)
  size = len(MODALITIES) * int(np.asarray(turn_mask, bool).sum())
  out = np.zeros((size, values.shape[-1]))
  on = index >= 0
  out[index[on]] = values[on]
  return out


# -- the batch and the weights ---------------------------------------------------------------------


def parity_batch(seed: int, dialogues: int, turns: int = TURNS, feature_dims=None) -> dict:
  """A dialogue batch (`pipeline.collate_dialogues`' fields) of `dialogues` x `turns`, every turn
  real and every modality present, features N(0, 1), speakers and labels at random; float32."""
  dims = dict(FEATURE_DIMS if feature_dims is None else feature_dims)
  rng = np.random.default_rng(seed + 1)
  batch = {m: rng.standard_normal((dialogues, turns, dims[m])).astype(np.float32) for m in MODALITIES}
  batch['speaker'] = rng.integers(0, NUM_SPEAKERS, (dialogues, turns)).astype(np.int32)
  batch['label'] = rng.integers(0, NUM_CLASSES, (dialogues, turns)).astype(np.int32)
  batch['turn_mask'] = np.ones((dialogues, turns), bool)
  batch['modality_mask'] = np.ones((dialogues, turns, len(MODALITIES)), bool)
  return graphs.add_dialogue_graph(batch, len(MODALITIES), 1)


def class_weights(batch) -> np.ndarray:
  """The loss's class weights: our method's inverse frequencies, of the batch's labels."""
  counts = np.bincount(np.asarray(batch['label'])[np.asarray(batch['turn_mask'], bool)],
                       minlength=NUM_CLASSES)
  return mmgcn_method.inverse_frequency_weights(counts)


def model(num_layers: int = NUM_LAYERS) -> mmgcn.MMGCN:
  """Ours with `OUR_OPTIONS` (fewer GCN layers for the cheap tests of the map and layouts)."""
  return mmgcn.MMGCN(**{**OUR_OPTIONS, 'gcn_layers': num_layers})


def model_inputs(batch):
  """MMGCN's positional inputs from a dialogue batch: features, speaker, masks, graph."""
  return ({m: batch[m] for m in MODALITIES}, batch['speaker'], batch['turn_mask'],
          batch['modality_mask'], batch['graph'])


def init_params(seed: int, batch, num_layers: int = NUM_LAYERS) -> dict:
  """Our initialisation plus N(0, 0.02^2) (zero biases would leave the bias map untested), float32."""
  net = model(num_layers)
  params = jax.jit(lambda k: net.init(k, *model_inputs(batch), deterministic=True)['params'])(
      jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda x: (np.asarray(x) + 0.02 * rng.standard_normal(x.shape)).astype(np.float32), params)


def _cast(tree, dtype):
  """Floating leaves to `dtype`; integer and boolean ones (the graph's indices, masks) as they are."""
  def cast(x):
    x = np.asarray(x)
    return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x
  return jax.tree_util.tree_map(cast, tree)


# -- our side ---------------------------------------------------------------------------------------

_CAPTURED = ('encoder_audio', 'encoder_visual', 'encoder_text', 'Bidirectional_1', 'gcn')


def weighted_nll(logits, label, turn_mask, weights):
  """Their `nn.NLLLoss(weight)` over the real turns: sum(w_y nll) / sum(w_y), from our logits."""
  per = mmgcn_method.class_loss('weighted_nll', logits, label, class_weights=weights)
  w = jnp.where(turn_mask, jnp.asarray(weights, logits.dtype)[label], 0.0)
  return jnp.sum(jnp.where(turn_mask, per, 0.0)) / jnp.sum(w)


class _Ours:
  """Our forward pass (logits, normalised edge weights, the captured intermediates) and the
  loss's value and gradients, each compiled once per dtype."""

  def __init__(self, net):
    def forward(params, batch):
      (logits, weights), state = net.apply(
          {'params': params}, *model_inputs(batch), deterministic=True, return_adjacency=True,
          capture_intermediates=lambda mdl, method: method == '__call__' and mdl.name in _CAPTURED,
          mutable=['intermediates'])
      inter = state['intermediates']
      return logits, weights, {k: inter[k]['__call__'][0] for k in _CAPTURED}

    def loss(params, batch, weights):
      logits = net.apply({'params': params}, *model_inputs(batch), deterministic=True)
      return weighted_nll(logits, batch['label'], batch['turn_mask'], weights)

    self.forward = jax.jit(forward)
    self.loss = jax.jit(jax.value_and_grad(loss))


# -- the authors' side -----------------------------------------------------------------------------


@contextlib.contextmanager
def stub_modules(stubs=None):
  """Empty stand-ins for the modules their files import but this path never uses, in sys.modules
  for the duration (modules already imported are left as they are)."""
  stubs = STUBS if stubs is None else stubs
  added = []
  for name, attrs in stubs.items():
    if name in sys.modules:
      continue
    module = types.ModuleType(name)
    for attr in attrs:
      setattr(module, attr, _unavailable(f'{name}.{attr}'))
    sys.modules[name] = module
    added.append(name)
  try:
    yield
  finally:
    for name in added:
      del sys.modules[name]


def _unavailable(name: str):
  def stand_in(*args, **kwargs):
    raise RuntimeError(f'{name} is a stand-in of the MMGCN parity check; this path does not use it')
  return stand_in


def import_authors(repo: str) -> dict:
  """Their DialogueGCNModel, imported from the checkout with `stub_modules`."""
  with stub_modules():
    return checkout.import_names(repo, CLASSES, REQUIRED)


def build_authors(classes, feature_dims=None, **overrides):
  """Their DialogueGCNModel with train.py's arguments, `overrides` of `AUTHORS_OPTIONS` applied
  (its prints to stderr)."""
  dims = dict(FEATURE_DIMS if feature_dims is None else feature_dims)
  options = dict(AUTHORS_OPTIONS, **overrides)
  base, d_g, d_p, d_e, d_h, d_a, g_h = (options.pop(k) for k in (
      'base_model', 'D_g', 'D_p', 'D_e', 'D_h', 'D_a', 'graph_hidden_size'))
  with contextlib.redirect_stdout(sys.stderr):
    return classes['DialogueGCNModel'](base, dims['text'], d_g, d_p, d_e, d_h, d_a, g_h,
                                       D_m_v=dims['visual'], D_m_a=dims['audio'], **options)


def legacy_index(index):
  """PyTorch < 2.9's reading of a non-tuple sequence of index sequences: as a tuple.

  Their `adj[idx] = dia_sim` (create_big_adj) indexes with a [2, n] numpy array, the (rows, cols)
  of a block's diagonal; torch 2.9 and later read that array as one index into the first axis."""
  if isinstance(index, np.ndarray) and index.ndim == 2 and np.issubdtype(index.dtype, np.integer):
    return tuple(index)
  return index


@contextlib.contextmanager
def authors_runtime(torch, dtype, cuda_noop: bool = True):
  """Their forward as they ran it (torch 1.1 on a GPU): `Tensor.cuda` a no-op (unless
  `cuda_noop=False`: on a GPU their `.cuda()` calls are real), a [2, n] numpy index read as a
  tuple (`legacy_index`), and for float64 torch's default dtype float64."""
  default = torch.get_default_dtype()
  setitem = torch.Tensor.__setitem__

  def legacy_setitem(self, index, value):
    return setitem(self, legacy_index(index), value)

  if dtype == np.float64:
    torch.set_default_dtype(torch.float64)
  try:
    with contextlib.ExitStack() as patches:
      if cuda_noop:
        patches.enter_context(unittest.mock.patch.object(torch.Tensor, 'cuda',
                                                         lambda self, *args, **kwargs: self))
      patches.enter_context(unittest.mock.patch.object(torch.Tensor, '__setitem__', legacy_setitem))
      yield
  finally:
    torch.set_default_dtype(default)


def _hooks(their_model, captured):
  """Forward hooks that copy their intermediates into `captured` (numpy, float64)."""
  num = lambda x: x.detach().numpy().astype(np.float64)  # noqa: E731

  def keep(pick):
    def hook(module, args, output):
      del module
      captured.update({k: num(v) for k, v in pick(args, output).items()})
    return hook

  return [
      their_model.linear_a.register_forward_hook(keep(lambda a, o: {'audio': o})),
      their_model.linear_v.register_forward_hook(keep(lambda a, o: {'visual': o})),
      their_model.lstm_l.register_forward_hook(keep(lambda a, o: {'text_lstm': o[0]})),
      # GCNII_lyc(features, dia_len, qmask, adj): the node inputs, the adjacency, the output.
      their_model.graph_model.graph_net.register_forward_hook(
          keep(lambda a, o: {'nodes': a[0], 'adjacency': a[3], 'gcn': o})),
  ]


def _authors_side(torch, their_model, weights, batch, loss_weights, dtype):
  """Their intermediates, log-probabilities, loss and gradients (named by their parameters)."""
  tdtype = torch.float64 if dtype == np.float64 else torch.float32
  their_model.to(tdtype)
  sd = their_model.state_dict()
  unknown = set(weights) - set(sd)
  unmapped = [k for k in set(sd) - set(weights) if not k.startswith(UNUSED)]
  if unknown or unmapped:
    raise AssertionError(f'weight map and their state dict differ: {sorted(unknown)[:5]}, '
                         f'{sorted(unmapped)[:5]}')
  sd.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
  their_model.load_state_dict(sd, strict=True)
  their_model.eval()  # dropout off (its rates are 0 too)
  their_model.zero_grad()
  tensor = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype)))  # noqa: E731
  seq_first = lambda a: tensor(np.asarray(a).transpose(1, 0, 2))  # noqa: E731  [B, L, D] -> [L, B, D]
  turn_mask = np.asarray(batch['turn_mask'], bool)
  lengths = [int(n) for n in turn_mask.sum(axis=1)]
  qmask = np.eye(NUM_SPEAKERS)[np.asarray(batch['speaker'])]  # one-hot [B, L, n_speakers]
  label = np.concatenate([np.asarray(batch['label'])[b, :n] for b, n in enumerate(lengths)])
  captured = {}
  handles = _hooks(their_model, captured)
  try:
    with authors_runtime(torch, dtype):
      log_prob, *_ = their_model(seq_first(batch['text']), seq_first(qmask), tensor(turn_mask),
                                 lengths, seq_first(batch['audio']), seq_first(batch['visual']))
      loss = torch.nn.NLLLoss(tensor(loss_weights))(log_prob, torch.from_numpy(label.astype(np.int64)))
      loss.backward()
  finally:
    for h in handles:
      h.remove()
  grads, no_grad = {}, []
  for name, p in their_model.named_parameters():
    if p.grad is None:
      no_grad.append(name)
    else:
      grads[name] = p.grad.detach().numpy().copy()
  used = [k for k in no_grad if not k.startswith(UNUSED)]
  if used or any(k.startswith(UNUSED) for k in grads):
    raise AssertionError(f'their gradients do not cover exactly the mapped parameters: {used[:5]}')
  captured.update(log_probs=log_prob.detach().numpy().astype(np.float64), loss=loss.item(), grads=grads)
  return captured


def compare_adjacency(ours, theirs, tolerance: float, self_loop_tolerance: float) -> dict:
  """`adjacency`: every entry off the diagonal (the zeros included); `adjacency/self_loops`: the
  diagonal, with its own float32 tolerance (`SELF_LOOP_TOLERANCE`), both relative to the largest
  entry of their whole matrix."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  scale = float(np.max(np.abs(theirs)))
  diag = np.eye(len(theirs), dtype=bool)
  out = {}
  parts = (('adjacency', ~diag, tolerance), ('adjacency/self_loops', diag, self_loop_tolerance))
  for name, where, tol in parts:
    diff = tolerances.difference(ours[where], theirs[where], tol)
    diff['max_rel'] = diff['max_abs'] / scale
    diff['ok'] = bool(np.isfinite(diff['max_rel']) and diff['max_rel'] <= tol)
    out[name] = diff
  return out


def self_loop_rounding(pair32, pair64) -> dict:
  """How far each side's float32 self-loop weights are from the same side's float64 ones
  (max abs / the largest float64 entry): float32 rounding of the arccos at 0.99999, not a
  difference between the two codes."""
  diag = np.eye(len(pair64[1]), dtype=bool)
  scale = float(np.max(np.abs(pair64[1])))
  return {side: float(np.max(np.abs(np.asarray(a32)[diag] - np.asarray(a64)[diag]))) / scale
          for side, a32, a64 in (('ours', pair32[0], pair64[0]), ('theirs', pair32[1], pair64[1]))}


def _real_turns(x, turn_mask):
  """[B, L, ...] -> their [sum of lengths, ...] (dialogue-major)."""
  return np.asarray(x)[np.asarray(turn_mask, bool)]


def worst_of(entries_: dict) -> dict:
  """The failing or else largest-max_rel comparison among `entries_`, its name under 'worst'."""
  name = max(entries_, key=lambda k: (not entries_[k]['ok'], entries_[k]['max_rel']))
  return {**entries_[name], 'worst': name.rsplit('/', 1)[-1]}


def compare_gradients(grads, their_grads, tolerance: float, num_layers: int = NUM_LAYERS) -> dict:
  """gradient/<group> for each group; the GCN layers reduced to their worst, `gradient/gcn/layers`."""
  q = tolerances.compare_groups(grads, their_grads, gradient_groups(num_layers), tolerance, 'gradient')
  layers = {k: q.pop(k) for k in list(q) if k.startswith('gradient/gcn/layer_')}
  out = {k: v for k, v in q.items() if k != 'gradient/classifier'}
  out[f'gradient/{ALL_LAYERS}'] = worst_of(layers)
  out['gradient/classifier'] = q['gradient/classifier']
  return out


def run(authors_repo: str, *, precisions=('float32', 'float64'), seed: int = 0, batch_size: int = 8,
        turns: int = TURNS) -> dict:
  """`batch_size` dialogues of `turns` turns each, their model against ours (module docstring)."""
  torch = checkout.require_torch()
  jax.config.update('jax_enable_x64', True)
  torch.manual_seed(seed)
  classes = import_authors(authors_repo)
  their_model = build_authors(classes)
  batch32 = parity_batch(seed, batch_size, turns)
  params32 = init_params(seed, batch32)
  loss_weights = class_weights(batch32)
  ours = _Ours(model())
  turn_mask = batch32['turn_mask']
  graph = batch32['graph']
  width = 2 * D_E
  total = int(turn_mask.sum())
  rows = {m: slice(k * total, (k + 1) * total) for k, m in enumerate(MODALITIES)}  # their node rows

  sections, adjacency = {}, {}
  for precision in precisions:
    dtype = np.dtype(precision).type
    tol = tolerances.TOLERANCES[precision]
    f, g = tol['forward'], tol['gradient']
    batch = _cast(batch32, dtype)
    params = _cast(params32, dtype)
    theirs = _authors_side(torch, their_model, to_authors(params), batch, loss_weights.astype(dtype), dtype)
    logits, weights, inter = ours.forward(params, batch)
    if np.asarray(logits).dtype != dtype:
      raise AssertionError(f'ours computed in {np.asarray(logits).dtype}, not {precision}')
    loss, grads = ours.loss(params, batch, loss_weights.astype(dtype))
    gcn = to_authors_nodes(inter['gcn'], graph, turn_mask)  # [3 N, width + hidden]
    q = {}
    for m in ('audio', 'visual'):
      q[f'encoder/{m}'] = tolerances.difference(_real_turns(inter[f'encoder_{m}'], turn_mask),
                                             _real_turns(theirs[m].transpose(1, 0, 2), turn_mask), f)
    their_lstm = theirs['text_lstm'].transpose(1, 0, 2)  # [L, B, D] -> [B, L, D]
    q['encoder/text_lstm'] = tolerances.difference(_real_turns(inter['Bidirectional_1'], turn_mask),
                                                _real_turns(their_lstm, turn_mask), f)
    for m in MODALITIES:
      q[f'nodes/{m}'] = tolerances.difference(gcn[rows[m], :width], theirs['nodes'][rows[m]], f)
    adjacency[precision] = (dense_adjacency(weights, graph, turn_mask), theirs['adjacency'])
    q.update(compare_adjacency(*adjacency[precision], f, SELF_LOOP_TOLERANCE[precision]))
    q['gcn/output'] = tolerances.difference(gcn[:, width:], theirs['gcn'][:, width:], f)
    log_probs = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
    q['log_probs'] = tolerances.difference(_real_turns(log_probs, turn_mask), theirs['log_probs'], f)
    q['loss'] = tolerances.difference(loss, theirs['loss'], f)
    their_grads = from_authors(theirs['grads'], gradient=True)
    q.update(compare_gradients(grads, their_grads, g))
    sections[precision] = q

  extra = {}
  if {'float32', 'float64'} <= set(adjacency):
    extra['self_loops_float32_vs_float64'] = self_loop_rounding(adjacency['float32'], adjacency['float64'])
  return tolerances.report(
      'mmgcn', sections, authors_repo=authors_repo, authors_commit=checkout.commit(authors_repo),
      options={'authors': AUTHORS_OPTIONS, 'authors_mm_gcn': {'nlayers': NUM_LAYERS, 'variant': True},
               'ours': {k: list(v) if isinstance(v, tuple) else v for k, v in OUR_OPTIONS.items()}},
      batch={'dialogues': batch_size, 'turns': turns, 'feature_dims': FEATURE_DIMS,
             'class_weights': loss_weights.tolist()},
      notes=['dropout off on both sides (their model in eval mode with dropout 0, our rates 0)',
             'dialogues of equal length: their text LSTM runs over the padding (no packing), '
             'ours stops at each dialogue\'s end; only equal lengths compute the same',
             'torch_geometric (RGCNConv, GraphConv) and ipdb stubbed in sys.modules for the import '
             'only (imported at the top of their files, unused on this path)',
             'torch.Tensor.cuda a no-op during their forward (MM_GCN calls .cuda() unconditionally)',
             "create_big_adj's adj[idx] = dia_sim with idx a [2, n] numpy array: read as a tuple "
             '(rows, cols) during their forward, as their torch 1.1 did (torch >= 2.9 reads it as '
             'one index and fails)',
             'float64: torch default dtype float64 during their forward (create_big_adj builds its '
             'matrices with torch.zeros in the default dtype); float32 unpatched',
             'their unused parameters (att_model, gatedatt, MM_GCN a/v/l_fc, feature_fc, final_fc, '
             'modal and per-modality speaker embeddings) keep their initial values; checked to get '
             'no gradient',
             'loss: their nn.NLLLoss(weight) on the real turns; ours sum(w_y nll) / sum(w_y) from '
             'our logits (our method\'s weighted_nll averages w_y nll instead)',
             'LSTM: torch bias_ih + bias_hh is our one bias (bias_hh = 0 in the copied weights); '
             'its gradient compared through d/dbias_ih',
             'gradient/gcn/layers: each of the 64 GCN layers compared on its own, the worst reported',
             'adjacency/self_loops: float32 tolerance 1e-4 (arccos near 0.99999 amplifies the '
             'cosine\'s rounding ~224x on both sides; see self_loops_float32_vs_float64)'],
      **extra)
