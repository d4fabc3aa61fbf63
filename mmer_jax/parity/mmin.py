"""MMIN against the authors' code (AIM3-RUC/MMIN, branch master), weight for weight.

Their networks (`models/networks/`: `LSTMEncoder`, `TextCNN`, `ResidualAE`, `FcClassifier`) are
built with `configs/mmin_iemocap.py`'s sizes, and their `MMINModel`'s own `set_input`, `forward`,
`backward` and `optimize_parameters` run on a stand-in object (their `__init__` loads a
pretrained checkpoint and moves everything to CUDA). Ours is `methods/mmin.py` with the teacher
tables fitted on the batch, its loss, and one `steps.train_step`. `to_authors` / `from_authors`
map the weights (`joint_permutation`: their joint vector is (audio, text, visual)). The run sets
`PARITY_OPTIONS`, the config fields whose defaults depart from the authors' code on purpose, to
their behaviour; dropout is off on both sides.

What is set, the weight map and the results: docs/mmin.md#parity-with-the-authors-code.
"""

from __future__ import annotations

import argparse
import functools
import operator
import unittest.mock

from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmer_jax import missing
from mmer_jax import stages
from mmer_jax import steps
from mmer_jax import train
from mmer_jax.parity import checkout
from mmer_jax.parity import tolerances
from mmer_jax.parity import layouts

CONFIG = 'configs/mmin_iemocap.py:smoke'  # the authors' feature sizes, a synthetic batch
AUTHORS_ORDER = ('audio', 'text', 'visual')  # their torch.cat([A, L, V])
ENCODER_NETS = {'audio': 'netA', 'visual': 'netV', 'text': 'netL'}
MODEL_NAMES = ('A', 'V', 'L', 'C', 'AE', 'AE_cycle')  # their `model_names` (one optimiser group each)
CLIP_GROUPS = ('encoders/audio', 'encoders/visual', 'encoders/text', 'classifier', 'forward_net',
               'backward_net')  # ours, one per network of theirs
PARITY_OPTIONS = {
    'method.missing_slot': 'encoded_zeros',
    'method.encoders.padding': 'included',
    'method.encoders.lstm_biases': 2,
    'optimizer.clip_groups': CLIP_GROUPS,
    'method.encoders.dropout': 0.0,
    'method.classifier.dropout': 0.0,
    'train.missing': 'none',
}
REQUIRED = ('models/mmin_model.py', 'models/networks/lstm.py', 'models/networks/textcnn.py',
            'models/networks/autoencoder.py', 'models/networks/classifier.py')
CLASSES = {
    'MMINModel': 'models.mmin_model:MMINModel', 'LSTMEncoder': 'models.networks.lstm:LSTMEncoder',
    'TextCNN': 'models.networks.textcnn:TextCNN', 'ResidualAE': 'models.networks.autoencoder:ResidualAE',
    'FcClassifier': 'models.networks.classifier:FcClassifier',
}
TRAINABLE = CLIP_GROUPS


def joint_permutation(modalities, embed_dim: int) -> np.ndarray:
  """Indices p with ours = theirs[..., p] for joint vectors (ours in `modalities` order)."""
  theirs = [m for m in AUTHORS_ORDER if m in modalities]
  return np.concatenate([np.arange(embed_dim) + embed_dim * theirs.index(m) for m in modalities])


def _entries(modalities, num_blocks: int, ae_depth: int, cls_depth: int, cls_stride: int):
  """(our layer path, their network, their layer prefix, kind, permute in, permute out)."""
  out = []
  for prefix, their in (('encoders', ''), ('teacher', 'teacher.')):
    for m in modalities:
      net = their + ENCODER_NETS[m]
      if m == 'text':
        out += [(f'{prefix}/text/conv_{k}', net, f'conv{i + 1}', 'conv', False, False)
                for i, k in enumerate((3, 4, 5))]
        out.append((f'{prefix}/text/embed', net, 'embd.0', 'linear', False, False))
      else:
        out.append((f'{prefix}/{m}/lstm', net, 'rnn', 'lstm', False, False))
  for ours, net in (('forward_net', 'netAE'), ('backward_net', 'netAE_cycle')):
    for k in range(num_blocks):
      for i in range(ae_depth):
        out.append((f'{ours}/block_{k}/enc_{i}', net, f'encoder_{k}.{2 * i}', 'linear', i == 0, False))
        out.append((f'{ours}/block_{k}/dec_{i}', net, f'decoder_{k}.{2 * i}', 'linear', False,
                    i == ae_depth - 1))
    out.append((f'{ours}/transition_0', net, 'transition.0', 'linear', True, True))
    out.append((f'{ours}/transition_1', net, 'transition.2', 'linear', True, True))
  for i in range(cls_depth):
    out.append((f'classifier/dense_{i}', 'netC', f'module.{cls_stride * i}', 'linear', False, False))
  out.append(('classifier/out', 'netC', 'fc_out', 'linear', False, False))
  return out


def entries_for(config: ml_collections.ConfigDict, modalities):
  m = config.method
  # Their FcClassifier puts Linear, ReLU (and Dropout when its rate is > 0) per hidden layer.
  return _entries(tuple(modalities), m.cra.num_blocks, len(m.cra.layers), len(m.classifier.hidden),
                  cls_stride=3)


def to_authors(params, entries, perm) -> dict[str, dict[str, np.ndarray]]:
  """Our parameters -> {their network: {their parameter name: array}} (state_dict layout)."""
  inv = np.argsort(perm)
  out: dict[str, dict[str, np.ndarray]] = {}
  for path, net, prefix, kind, p_in, p_out in entries:
    layer = functools.reduce(operator.getitem, path.split('/'), params)
    if kind == 'linear':
      layer = dict(layer)  # permuted below without touching `params`
      if p_in:
        layer['kernel'] = layer['kernel'][inv]
      if p_out:
        layer['kernel'], layer['bias'] = layer['kernel'][:, inv], layer['bias'][inv]
      names = layouts.linear_from_flax(layer)
    elif kind == 'conv':
      names = layouts.time_conv_from_flax(layer)
    elif 'input' in layer:
      names = layouts.paired_lstm_from_flax(layer)
    else:
      names = layouts.lstm_from_flax(layer)
    for name, value in names.items():
      out.setdefault(net, {})[f'{prefix}.{name}'] = value
  return out


def from_authors(state_dicts, entries, perm, *, gradient: bool = False, lstm_biases: int = 1) -> dict:
  """{their network: state_dict (or its gradients)} -> our parameter tree (teacher tables aside).

  `lstm_biases` is our encoders' (`method.encoders.lstm_biases`): 2 keeps PyTorch's pair as it
  is; with 1 the pair is summed, and with `gradient` d/dbias_ih is taken alone
  (`layouts.lstm_to_flax`).
  """
  out = {}  # layer path -> layer
  for path, net, prefix, kind, p_in, p_out in entries:
    sd = state_dicts.get(net)
    if sd is None:
      continue
    get = lambda name, sd=sd, prefix=prefix: np.asarray(sd[f'{prefix}.{name}'])  # noqa: E731
    if kind == 'linear':
      layer = layouts.linear_to_flax(get('weight'), get('bias'))
      if p_in:
        layer['kernel'] = layer['kernel'][perm]
      if p_out:
        layer['kernel'], layer['bias'] = layer['kernel'][:, perm], layer['bias'][perm]
    elif kind == 'conv':
      layer = layouts.time_conv_to_flax(get('weight'), get('bias'))
    else:
      args = [get(n) for n in ('weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0')]
      layer = (layouts.paired_lstm_to_flax(*args) if lstm_biases == 2
               else layouts.lstm_to_flax(*args, gradient=gradient))
    out[path] = layer
  return traverse_util.unflatten_dict(out, sep='/')


# -- the run --------------------------------------------------------------------------------------


def parity_config(batch_size: int) -> ml_collections.ConfigDict:
  from configs import mmin_iemocap  # pylint: disable=g-import-not-at-top
  config = mmin_iemocap.get_config(CONFIG.split(':')[1])
  for field, value in PARITY_OPTIONS.items():
    *parents, leaf = field.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.data.batch_size = config.data.eval_batch_size = batch_size
  config.data.prefetch = 0
  config.parallel = 'jit'
  return stages.main_stage(stages.resolve(config))


def parity_batch(run, seed: int) -> dict:
  """A training batch of the synthetic set: padding frames zeroed (the authors' collate pads
  with zeros), indices 0..B-1 (the teacher tables are fitted on it), the six missing patterns
  in turn."""
  batch = jax.tree_util.tree_map(np.asarray, next(iter(run.streams.epoch('train', seed, train=True))))
  size = len(batch['label'])
  for m in run.method.modalities:
    t = np.arange(batch[m].shape[1])[None, :, None]
    batch[m] = np.where(t < batch['lengths'][m][:, None, None], batch[m], 0).astype(np.float32)
  patterns = np.array([missing.CONDITIONS[c] for c in missing.MISSING_CONDITIONS], bool)
  batch['modality_mask'] = patterns[np.arange(size) % len(patterns)]
  batch['index'] = np.arange(size, dtype=np.int32)
  batch['example_mask'] = np.ones(size, bool)
  return batch


def jittered_params(run, batch, seed: int) -> dict:
  """Our initialisation plus small noise (zero biases would put ReLUs on their kinks), float32."""
  params = jax.tree_util.tree_map(np.asarray, run.method.init(jax.random.PRNGKey(seed), batch))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda x: (x + 0.02 * rng.standard_normal(x.shape)).astype(np.float32), params)


def _cast(tree, dtype):
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x), tree)


def build_authors(classes, config, spec, torch):
  """Their networks with the config's sizes, and the stand-in their MMINModel methods run on."""
  m = config.method
  e = m.encoders.embed_dim
  dims = {k: spec.modalities[k].dim for k in ENCODER_NETS}

  def encoders():
    return {'netA': classes['LSTMEncoder'](dims['audio'], e, embd_method='maxpool'),
            'netL': classes['TextCNN'](dims['text'], e),
            'netV': classes['LSTMEncoder'](dims['visual'], e, 'maxpool')}

  mmin_model = classes['MMINModel']

  class AuthorsStep:
    """Carries what their MMINModel methods read; the methods themselves are theirs."""
    set_input = mmin_model.set_input
    forward = mmin_model.forward
    backward = mmin_model.backward
    optimize_parameters = mmin_model.optimize_parameters

  s = AuthorsStep()
  s.device, s.isTrain = torch.device('cpu'), True
  for name, net in encoders().items():
    setattr(s, name, net)
  layers = list(m.cra.layers)
  ae = lambda: classes['ResidualAE'](layers, m.cra.num_blocks, 3 * e, dropout=0, use_bn=False)  # noqa: E731
  s.netAE, s.netAE_cycle = ae(), ae()
  s.netC = classes['FcClassifier'](layers[-1] * m.cra.num_blocks, list(m.classifier.hidden),
                                   output_dim=spec.num_classes, dropout=0.5, use_bn=False)
  s.model_names = list(MODEL_NAMES)
  s.pretrained_encoder = argparse.Namespace(**encoders())
  s.criterion_ce, s.criterion_mse = torch.nn.CrossEntropyLoss(), torch.nn.MSELoss()
  s.ce_weight, s.mse_weight, s.cycle_weight = m.ce_weight, m.fwd_weight, m.cycle_weight
  return s


def _networks(s):
  nets = {f'net{n}': getattr(s, f'net{n}') for n in MODEL_NAMES}
  nets.update({f'teacher.{k}': getattr(s.pretrained_encoder, k) for k in ENCODER_NETS.values()})
  return nets


def authors_optimizer(s, optimizer: ml_collections.ConfigDict, torch):
  """Their MMINModel's optimiser: Adam over one parameter group per network of `model_names`."""
  return torch.optim.Adam([{'params': getattr(s, 'net' + n).parameters()} for n in s.model_names],
                          lr=optimizer.learning_rate, betas=(optimizer.b1, optimizer.b2), eps=optimizer.eps)


def _load(s, weights, optimizer, torch, dtype):
  for name, net in _networks(s).items():
    net.to(dtype)
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights[name].items()},
                        strict=True)
    net.eval()  # dropout off (the LSTMs and linear layers have no other train-mode behaviour)
  s.optimizer = authors_optimizer(s, optimizer, torch)  # a fresh Adam state for each comparison


def _authors_side(s, batch, weights, optimizer, torch, dtype):
  """Their forward outputs, loss terms, raw gradients and parameters after one optimiser step."""
  tdtype = torch.float64 if dtype == np.float64 else torch.float32
  _load(s, weights, optimizer, torch, tdtype)
  s.set_input({'A_feat': torch.from_numpy(batch['audio']), 'V_feat': torch.from_numpy(batch['visual']),
               'L_feat': torch.from_numpy(batch['text']),
               'label': torch.from_numpy(batch['label'].astype(np.int64)),
               'missing_index': torch.from_numpy(batch['modality_mask'].astype(np.int64))})
  # Their set_input casts to float32 (exact: the batch is float32); promote back for float64.
  for k in ('A_miss', 'A_reverse', 'V_miss', 'V_reverse', 'L_miss', 'L_reverse'):
    setattr(s, k, getattr(s, k).to(tdtype))
  s.forward()
  s.optimizer.zero_grad()
  with unittest.mock.patch.object(torch.nn.utils, 'clip_grad_norm_', lambda *a, **k: None):
    s.backward()  # their loss and backward pass, clipping held back to read the raw gradients
  grads = {name: {k: p.grad.detach().numpy().copy() for k, p in net.named_parameters()}
           for name, net in _networks(s).items() if not name.startswith('teacher.')}
  num = lambda x: x.detach().numpy().astype(np.float64)  # noqa: E731
  out = {'feat_A': num(s.feat_A_miss), 'feat_V': num(s.feat_V_miss), 'feat_L': num(s.feat_L_miss),
         'target': num(s.T_embds), 'imagined': num(s.recon_fusion), 'latents': num(s.latent),
         'cycle': num(s.recon_cycle), 'logits': num(s.logits),
         'ce': float(s.loss_CE) / s.ce_weight, 'fwd': float(s.loss_mse) / s.mse_weight,
         'cycle_loss': float(s.loss_cycle) / s.cycle_weight,
         'total': float(s.loss_CE + s.loss_mse + s.loss_cycle)}
  s.optimize_parameters(0)  # their step: forward, backward with per-network clipping, Adam
  after = {name: {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
           for name, net in _networks(s).items()}
  return out, grads, after


def _our_side(run, params, batch):
  method = run.method
  params = method.fit(params, lambda: [batch])  # the teacher tables, as training fits them
  out = method._apply(params, batch, None, teacher_targets=(), with_cycle=True)  # pylint: disable=protected-access
  target = method.cached_target(params['teacher_tables'], batch)
  loss, aux = method.loss(params, batch, None)
  grads = jax.grad(lambda p: jnp.mean(method.loss(p, batch, None)[0]))(params)
  state = run.init_state(params)
  step = jax.jit(lambda st, b: steps.train_step(st, b, method=method, missing_mode='none'))
  state, _ = step(state, batch)
  return out, target, loss, aux, grads, state.params


def run(authors_repo: str, *, precisions=('float32', 'float64'), seed: int = 0, batch_size: int = 8) -> dict:
  torch = checkout.require_torch()
  jax.config.update('jax_enable_x64', True)
  torch.manual_seed(seed)
  classes = checkout.import_names(authors_repo, CLASSES, REQUIRED)
  config = parity_config(batch_size)
  run_ = train.Run(config, devices=jax.devices('cpu')[:1])
  modalities = run_.method.modalities
  if set(modalities) != set(ENCODER_NETS):
    raise ValueError(f'MMIN parity needs audio, visual and text; the dataset has {modalities}')
  entries = entries_for(config, modalities)
  e = config.method.encoders.embed_dim
  perm = joint_permutation(modalities, e)
  batch32 = parity_batch(run_, seed)
  params32 = jittered_params(run_, batch32, seed)
  s = build_authors(classes, config, run_.spec, torch)
  slot = {m: slice(e * i, e * (i + 1)) for i, m in enumerate(modalities)}

  sections = {}
  for precision in precisions:
    dtype = np.dtype(precision).type
    tol = tolerances.TOLERANCES[precision]
    batch = _cast(batch32, dtype)
    params = _cast(params32, dtype)
    theirs, their_grads, their_after = _authors_side(
        s, batch, to_authors(params, entries, perm), config.optimizer, torch, dtype)
    out, target, loss, aux, grads, after = _our_side(run_, params, batch)
    if np.asarray(out['logits']).dtype != dtype:
      raise AssertionError(f'ours computed in {np.asarray(out["logits"]).dtype}, not {precision}')
    f, g = tol['forward'], tol['gradient']
    student = np.asarray(out['student'])
    q = {f'embedding/{m}': tolerances.difference(student[:, slot[m]], theirs[f'feat_{ENCODER_NETS[m][-1]}'], f)
         for m in modalities}
    q['forward_target'] = tolerances.difference(target, theirs['target'][:, perm], f)
    q['cra/output'] = tolerances.difference(out['imagined'], theirs['imagined'][:, perm], f)
    q['cra/latents'] = tolerances.difference(out['latents'], theirs['latents'], f)
    q['cycle/output'] = tolerances.difference(out['cycle'], theirs['cycle'][:, perm], f)
    q['logits'] = tolerances.difference(out['logits'], theirs['logits'], f)
    q['loss/ce'] = tolerances.difference(np.mean(aux['ce']), theirs['ce'], f)
    q['loss/forward'] = tolerances.difference(np.mean(aux['fwd_mse']), theirs['fwd'], f)
    q['loss/cycle'] = tolerances.difference(np.mean(aux['cycle_mse']), theirs['cycle_loss'], f)
    q['loss/total'] = tolerances.difference(np.mean(loss), theirs['total'], f)
    biases = config.method.encoders.lstm_biases
    their_grads = from_authors(their_grads, entries, perm, gradient=True, lstm_biases=biases)
    their_after = from_authors(their_after, entries, perm, lstm_biases=biases)
    q.update(tolerances.compare_groups(grads, their_grads, TRAINABLE, g, 'gradient'))
    q.update(tolerances.compare_groups(after, their_after, (*TRAINABLE, 'teacher'), g, 'step'))
    sections[precision] = q

  return tolerances.report(
      'mmin', sections, authors_repo=authors_repo, authors_commit=checkout.commit(authors_repo),
      config=CONFIG, options={k: list(v) if isinstance(v, tuple) else v for k, v in PARITY_OPTIONS.items()},
      batch={'size': batch_size, 'patterns': list(missing.MISSING_CONDITIONS),
             'lengths': {m: np.asarray(batch32['lengths'][m]).tolist() for m in modalities}},
      notes=['dropout off on both sides (their nets in eval mode, our rates 0)',
             "their set_input casts the batch to float32 (exact: it is float32); float64 promotes it back",
             'gradients before clipping; step = one optimiser step (their optimize_parameters, our '
             'steps.train_step) from the same state'])
