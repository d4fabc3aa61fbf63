"""Times the authors' own PyTorch MMGCN (their `DialogueGCNModel`, run from your checkout) on this CPU
(or a GPU: `--device=cuda`).

  git clone https://github.com/hujingwen6666/MMGCN /path/to/MMGCN
  pip install -e '.[parity]'   # torch, CPU build; not needed to train
  python benchmarks/authors_mmgcn_step.py --authors_repo=/path/to/MMGCN --turns=49,52,... --depths=64,4

Nothing of their code is copied here: `mmer_jax.parity.mmgcn` imports their modules from the
checkout (with `torch_geometric` and `ipdb` stubbed, unused by MMGCN) and builds their model with
their train.py's IEMOCAP arguments (run.sh: LSTM base, graph_type MMGCN, concat_subsequently,
avl, speaker embedding, D_e = 100, graph hidden 100); their runtime as on their GPU
(`mmer_jax.parity.mmgcn.authors_runtime`: `.cuda()` a no-op, their numpy diagonal index read as
torch 1.x read it). Their `MM_GCN` hard-codes 64 layers; depth d != 64 swaps in their own
`MM_GCN` class built with `nlayers=d` and otherwise the same arguments.

What is timed, as their `train_or_eval_graph_model` does it, on one batch of dialogues with the
given numbers of turns (IEMOCAP sizes: text 100, audio 1582, visual 342; their dropout 0.4):

  train_depth<d>   zero_grad, forward, class-weighted NLL, backward, Adam step (lr 3e-4, L2 3e-5)
  infer_depth<d>   forward under `torch.no_grad()` in eval mode, on the `--eval_turns` batch

  train_epoch_depth<d>, infer_epoch_depth<d>   with `--epoch_batches` / `--eval_epoch_batches`
                   (batches separated by ';', each its dialogues' turns): one such call per
                   batch, the whole epoch timed `--epoch_repeats` times after one untimed pass;
                   also the utterances and utterances per second at the median

Prints one JSON line: per entry the median, min and max seconds over `--steps` timed calls after
one untimed call, the torch version and its thread count.

`--device=cuda` runs it as they did, on a GPU: their `.cuda()` calls are real (`no_cuda=False`,
their train.py's setting with a GPU), the model and the batch on the GPU, each timed call
synchronised (`torch.cuda.synchronize`) before its clock stops.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import timing  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from mmer_jax.parity import checkout  # pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax.parity import mmgcn as parity_mmgcn  # pylint: disable=g-import-not-at-top,wrong-import-position

# Their train.py's loss weights for IEMOCAP (1 / class share).
IEMOCAP_WEIGHTS = (1 / 0.086747, 1 / 0.144406, 1 / 0.227883, 1 / 0.160585, 1 / 0.127711, 1 / 0.252668)


def build(repo: str, depth: int, dropout: float, device: str = 'cpu'):
  """Their DialogueGCNModel (their MM_GCN at `depth` layers) on `device`, and their Adam."""
  torch = checkout.require_torch()
  with parity_mmgcn.stub_modules():
    classes = checkout.import_names(repo, {**parity_mmgcn.CLASSES, 'MM_GCN': 'model_mm:MM_GCN'},
                                    parity_mmgcn.REQUIRED)
  torch.manual_seed(0)
  model = parity_mmgcn.build_authors(classes, dropout=dropout, no_cuda=device == 'cpu')
  if depth != parity_mmgcn.NUM_LAYERS:
    g = model.graph_model
    width = 2 * parity_mmgcn.D_E
    model.graph_model = classes['MM_GCN'](
        a_dim=width, v_dim=width, l_dim=width, n_dim=width, nlayers=depth,
        nhidden=parity_mmgcn.GRAPH_HIDDEN, nclass=parity_mmgcn.NUM_CLASSES, dropout=dropout,
        lamda=0.5, alpha=0.1, variant=True, return_feature=True, use_residue=True,
        n_speakers=parity_mmgcn.NUM_SPEAKERS, modals=g.modals, use_speaker=g.use_speaker,
        use_modal=g.use_modal)
  model.to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=3e-5)
  return torch, model, optimizer


def inputs(torch, turns, seed: int = 0, device: str = 'cpu'):
  """Seq-first tensors as their dataloader yields them, for dialogues of `turns` turns, on `device`."""
  rng = np.random.default_rng(seed)
  b, length = len(turns), max(turns)
  dims = parity_mmgcn.FEATURE_DIMS
  feats = {m: torch.from_numpy(rng.standard_normal((length, b, d)).astype(np.float32)) for m, d in dims.items()}
  umask = np.zeros((b, length), np.float32)
  for k, n in enumerate(turns):
    umask[k, :n] = 1
  speakers = np.eye(parity_mmgcn.NUM_SPEAKERS, dtype=np.float32)[np.arange(length) % 2]
  qmask = torch.from_numpy(np.broadcast_to(speakers[:, None], (length, b, 2)).copy())
  label = torch.from_numpy(np.concatenate([rng.integers(6, size=n) for n in turns]).astype(np.int64))
  feats = {m: x.to(device) for m, x in feats.items()}
  return feats, qmask.to(device), torch.from_numpy(umask).to(device), list(turns), label.to(device)


def train_step(torch, model, optimizer, loss_fn, data):
  feats, qmask, umask, lengths, label = data
  model.train()
  optimizer.zero_grad()
  log_prob, *_ = model(feats['text'], qmask, umask, lengths, feats['audio'], feats['visual'])
  loss = loss_fn(log_prob, label)
  loss.backward()
  optimizer.step()
  return float(loss)


def infer(torch, model, data):
  feats, qmask, umask, lengths, _ = data
  model.eval()
  with torch.no_grad():
    return model(feats['text'], qmask, umask, lengths, feats['audio'], feats['visual'])[0]


def parse_batches(text: str | None) -> list[list[int]]:
  """'3,4;5' -> [[3, 4], [5]]."""
  return [[int(t) for t in b.split(',')] for b in (text or '').split(';') if b]


def time_epoch(fn, batches, repeats: int, sync) -> dict:
  """Seconds of one pass of `fn(batch)` over `batches` (median of `repeats` after one untimed
  pass) and the utterances per second at the median."""
  timed = timing.time_calls(lambda: [fn(b) for b in batches], repeats, sync)
  utterances = sum(sum(b[3]) for b in batches)  # b[3]: the batch's dialogue lengths
  return {**timed, 'batches': len(batches), 'utterances': utterances,
          'utterances_per_s': utterances / timed['median']}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--authors_repo', required=True, help='a checkout of hujingwen6666/MMGCN')
  parser.add_argument('--turns', required=True, help='turns of each training dialogue, comma-separated')
  parser.add_argument('--eval_turns', default=None, help='turns of each inference dialogue (default: --turns)')
  parser.add_argument('--depths', default='64,4')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--dropout', type=float, default=0.4)
  parser.add_argument('--device', default='cpu', help='cpu | cuda')
  parser.add_argument('--epoch_batches', default=None, help="training epoch: batches' turns, 'a,b;c,d'")
  parser.add_argument('--eval_epoch_batches', default=None, help="inference epoch: batches' turns")
  parser.add_argument('--epoch_repeats', type=int, default=2)
  opts = parser.parse_args()
  turns = [int(t) for t in opts.turns.split(',')]
  eval_turns = [int(t) for t in (opts.eval_turns or opts.turns).split(',')]
  report = {'authors_commit': checkout.commit(opts.authors_repo), 'turns': turns, 'eval_turns': eval_turns}
  torch = checkout.require_torch()
  _, sync, described = timing.torch_device(torch, opts.device)
  report.update(described)
  for depth in (int(d) for d in opts.depths.split(',')):
    torch, model, optimizer = build(opts.authors_repo, depth, opts.dropout, opts.device)
    loss_fn = torch.nn.NLLLoss(torch.tensor(IEMOCAP_WEIGHTS, dtype=torch.float32).to(opts.device))
    data = inputs(torch, turns, device=opts.device)
    eval_data = inputs(torch, eval_turns, seed=1, device=opts.device)
    with parity_mmgcn.authors_runtime(torch, np.float32, cuda_noop=opts.device == 'cpu'):
      report[f'train_depth{depth}'] = timing.time_calls(
          lambda: train_step(torch, model, optimizer, loss_fn, data), opts.steps, sync)
      print(f'train_depth{depth}: {report[f"train_depth{depth}"]}', file=sys.stderr, flush=True)
      report[f'infer_depth{depth}'] = timing.time_calls(lambda: infer(torch, model, eval_data),
                                                        opts.steps, sync)
      print(f'infer_depth{depth}: {report[f"infer_depth{depth}"]}', file=sys.stderr, flush=True)
      epochs = {'train': (parse_batches(opts.epoch_batches),
                          lambda d: train_step(torch, model, optimizer, loss_fn, d)),
                'infer': (parse_batches(opts.eval_epoch_batches), lambda d: infer(torch, model, d))}
      for kind, (batches, fn) in epochs.items():
        if batches:
          data_list = [inputs(torch, b, seed=k, device=opts.device) for k, b in enumerate(batches)]
          report[f'{kind}_epoch_depth{depth}'] = time_epoch(fn, data_list, opts.epoch_repeats, sync)
          print(f'{kind}_epoch_depth{depth}: {report[f"{kind}_epoch_depth{depth}"]}', file=sys.stderr,
                flush=True)
  report.update(torch=torch.__version__, threads=torch.get_num_threads())
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  main()
