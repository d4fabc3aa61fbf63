"""Times the authors' own PyTorch MMIN step (their classes and methods, run from your checkout).

  git clone -b master https://github.com/AIM3-RUC/MMIN /path/to/MMIN
  pip install -e '.[parity]'   # torch, CPU build; not needed to train
  python benchmarks/authors_mmin_step.py --authors_repo=/path/to/MMIN --steps 10

Nothing of their code is copied here: the script builds their networks and the `MMINModel`
stand-in with `mmer_jax.parity.mmin` (their classes imported from `--authors_repo`) and calls their `set_input`, `optimize_parameters` (forward,
CE + MSE + cycle loss, per-network clipping, Adam) and `test` on a stand-in object that carries the
attributes those methods read. `MMINModel.__init__` itself is bypassed only because it loads a
pretrained checkpoint from disk and moves everything to CUDA; the networks are built with the
arguments of their `scripts/CAP_mmin.sh` (ComParE 130-d, DenseFace 342-d, BERT-large 1024-d,
AE 256,128,64 x 5 blocks, classifier 128,128, dropout 0.5, Adam lr 2e-4, beta1 0.5, loss weights
1 / 4 / 2) and the teacher encoders are their `UttFusionModel` networks in eval mode.
Shapes: batch 128, audio T=100, visual T=50, text T=22 (the synthetic iemocap_4 set). Prints one
JSON line, comparable with `python -m mmer_jax.benchmark --config=configs/mmin_iemocap.py:synthetic`.
`--device=cuda`: their networks and the batch on the GPU (their `self.device`, which their
`set_input` moves each batch to), each timed call synchronised before its clock stops.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository's configs/
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import timing  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from configs import mmin_iemocap  # pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax import stages  # pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax.parity import checkout  # pylint: disable=g-import-not-at-top,wrong-import-position
from mmer_jax.parity import mmin as parity_mmin  # pylint: disable=g-import-not-at-top,wrong-import-position

FEATURE_DIMS = {'audio': 130, 'visual': 342, 'text': 1024}  # ComParE, DenseFace, BERT-large


def build(repo: str, batch: int, device: str = 'cpu'):
  """Their networks and `MMINModel` stand-in, as `mmer_jax.parity.mmin` builds them for the parity
  check (the config's sizes), on `device`, with their optimiser; the teacher encoders in eval mode."""
  torch = checkout.require_torch()
  classes = checkout.import_names(repo, parity_mmin.CLASSES, parity_mmin.REQUIRED)
  config = stages.main_stage(stages.resolve(mmin_iemocap.get_config('synthetic')))
  spec = types.SimpleNamespace(num_classes=4, modalities={
      m: types.SimpleNamespace(dim=d) for m, d in FEATURE_DIMS.items()})
  torch.manual_seed(0)
  s = parity_mmin.build_authors(classes, config, spec, torch)
  for net in vars(s.pretrained_encoder).values():
    net.eval()
  s.device = torch.device(device)
  for name in s.model_names:
    getattr(s, 'net' + name).to(s.device)
  for net in vars(s.pretrained_encoder).values():
    net.to(s.device)
  s.optimizer = parity_mmin.authors_optimizer(s, config.optimizer, torch)
  patterns = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]])
  data = {'A_feat': torch.randn(batch, 100, FEATURE_DIMS['audio']),
          'V_feat': torch.randn(batch, 50, FEATURE_DIMS['visual']),
          'L_feat': torch.randn(batch, 22, FEATURE_DIMS['text']), 'label': torch.randint(0, 4, (batch,)),
          'missing_index': patterns[torch.randint(0, 6, (batch,))]}
  data = {k: v.to(s.device) for k, v in data.items()}
  return torch, s, data


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--authors_repo', required=True, help='a checkout of AIM3-RUC/MMIN (master)')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--device', default='cpu', help='cpu | cuda')
  args = parser.parse_args()
  torch, s, data = build(args.authors_repo, args.batch, args.device)
  _, sync, described = timing.torch_device(torch, args.device)
  sync = sync or (lambda: None)

  def train_step():
    for name in s.model_names:
      getattr(s, 'net' + name).train()
    s.isTrain = True
    s.set_input(data)
    s.optimize_parameters(epoch=1)

  def eval_step():  # their test(): eval mode, no_grad forward (the cycle net runs too, as theirs)
    for name in s.model_names:
      getattr(s, 'net' + name).eval()
    s.isTrain = False
    s.set_input(data)
    with torch.no_grad():
      s.forward()
    return s.pred

  def timed(fn):
    fn()  # warm-up
    sync()
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      fn()
      sync()
      times.append(time.perf_counter() - t0)
    return times

  train_times = timed(train_step)
  eval_times = timed(eval_step)
  med = statistics.median(train_times)
  print(json.dumps({'framework': 'torch (authors\' MMINModel methods)', 'torch': torch.__version__,
                    'threads': torch.get_num_threads(), 'batch': args.batch, 'step_s_median': med,
                    'step_s_min': min(train_times), 'examples_per_s': args.batch / med,
                    'eval_step_s_median': statistics.median(eval_times), **described}))


if __name__ == '__main__':
  main()
