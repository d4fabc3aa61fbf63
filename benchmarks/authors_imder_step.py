"""Times the authors' own PyTorch IMDer (their `IMDER` class, run from your checkout) on this CPU
(or a GPU: `--device=cuda`, as they ran it).

  git clone https://github.com/mdswyz/IMDer /path/to/IMDer
  pip install -e '.[parity]'   # torch, CPU build; not needed to train
  python benchmarks/authors_imder_step.py --authors_repo=/path/to/IMDer --steps 3

Nothing of their code is copied here: `mmer_jax.parity.imder` imports their model modules from
the checkout (`import_authors`) and builds `IMDER` from their own `config/config.json`
(`authors_args`: MOSI, aligned 768 / 5 / 20 features, text features precomputed, `use_bert=False`).
Their forward hard-codes `device='cuda'` in its calls of `Euler_Maruyama_sampler`; the
imported module's `Euler_Maruyama_sampler` is wrapped to pass `device='cpu'`, nothing else changes.
With `--device=cuda` it passes 'cuda' (theirs), the model and the batch live on the GPU, and each
timed call is synchronised before its clock stops.

What is timed, as their trainer (`trains/singleTask/IMDER.py`) does it:

  train_<case>   zero_grad, forward(num_modal), L1 + 0.1 (score + rec), backward, gradient value
                 clipping, Adam step; the model in train mode.
  infer_<case>   forward(num_modal) under `torch.no_grad()`, the model in eval mode (their do_test).

with case = complete (num_modal=3), drop_one (num_modal=2: one modality missing, which one drawn
by their `random.sample`), drop_two (num_modal=1). `--num_steps` sets their sampler's step count
(their module-level `num_steps`, 100 by default). Shapes: batch 32 (MOSI) x 50 frames;
`--dataset=mosei --batch 128` their MOSEI entry (74-d audio, 35-d visual).
Prints one JSON line: per case the median, min and max seconds over `--steps` timed calls after
one untimed call, and the torch version and thread count.
"""

import argparse
import functools
import json
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import timing  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from mmer_jax.parity import checkout  # pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax.parity import imder as parity_imder  # pylint: disable=g-import-not-at-top,wrong-import-position

CASES = {'complete': 3, 'drop_one': 2, 'drop_two': 1}  # their num_modal: modalities available
FRAMES = 50


def build(repo: str, num_steps: int, dataset: str = 'mosi', device: str = 'cpu'):
  """Their IMDER (their config for `dataset`) with the model and the sampler on `device`, and
  their Adam."""
  torch = checkout.require_torch()
  mods = parity_imder.import_authors(repo)
  args = parity_imder.authors_args(repo, dataset)
  sampler = mods['imder'].Euler_Maruyama_sampler
  mods['imder'].Euler_Maruyama_sampler = functools.partial(
      lambda *a, _sampler=sampler, **k: _sampler(*a, **{**k, 'device': device}), num_steps=num_steps)
  mods['imder'].device = device  # their module-level device (marginal_prob_std, diffusion_coeff)
  torch.manual_seed(0)
  model = mods['imder'].IMDER(args).to(device)
  # Their trainer: Adam over the parameters that require grad (the projections are used under
  # no_grad, the BERT encoder is absent), lr from config; their weight_decay never reaches it.
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                               lr=args.learning_rate)
  return torch, model, optimizer, args


def inputs(torch, args, batch: int, device: str = 'cpu'):
  text_dim, audio_dim, visual_dim = args.feature_dims
  return tuple(x.to(device) for x in (
      torch.randn(batch, FRAMES, text_dim), torch.randn(batch, FRAMES, audio_dim),
      torch.randn(batch, FRAMES, visual_dim), torch.randn(batch, 1)))


def train_step(torch, model, optimizer, args, data, num_modal):
  text, audio, vision, labels = data
  model.train()
  optimizer.zero_grad()
  out = model(text, audio, vision, num_modal=num_modal)
  task = torch.nn.functional.l1_loss(out['M'], labels)
  loss = task + 0.1 * (out['loss_score_l'] + out['loss_score_v'] + out['loss_score_a']
                       + out['loss_rec'])
  loss.backward()
  torch.nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad],
                                  args.grad_clip)
  optimizer.step()
  return float(loss)


def infer(torch, model, data, num_modal):
  text, audio, vision, _ = data
  model.eval()
  with torch.no_grad():
    return model(text, audio, vision, num_modal=num_modal)['M']


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--authors_repo', required=True, help='a checkout of mdswyz/IMDer')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--num_steps', type=int, default=100, help='their sampler\'s steps')
  parser.add_argument('--cases', default='complete,drop_one,drop_two')
  parser.add_argument('--modes', default='train,infer')
  parser.add_argument('--dataset', default='mosi', choices=('mosi', 'mosei'),
                      help='their config.json entry (feature sizes, nlevels)')
  parser.add_argument('--device', default='cpu', help='cpu | cuda')
  opts = parser.parse_args()
  torch, model, optimizer, args = build(opts.authors_repo, opts.num_steps, opts.dataset, opts.device)
  _, sync, described = timing.torch_device(torch, opts.device)
  random.seed(0)
  data = inputs(torch, args, opts.batch, opts.device)
  report = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'batch': opts.batch,
            'dataset': opts.dataset,
            'num_steps': opts.num_steps, 'authors_commit': checkout.commit(opts.authors_repo),
            **described}
  for case in opts.cases.split(','):
    num_modal = CASES[case]
    for mode in opts.modes.split(','):
      if mode == 'train':
        fn = lambda n=num_modal: train_step(torch, model, optimizer, args, data, n)  # noqa: E731
      else:
        fn = lambda n=num_modal: infer(torch, model, data, n)  # noqa: E731
      report[f'{mode}_{case}'] = timing.time_calls(fn, opts.steps, sync)
      print(f'{mode}_{case}: {report[f"{mode}_{case}"]}', file=sys.stderr, flush=True)
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  main()
