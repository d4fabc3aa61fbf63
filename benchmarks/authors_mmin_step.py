"""Times the authors' own PyTorch MMIN step (their classes and methods, run from your checkout).

  git clone -b master https://github.com/AIM3-RUC/MMIN /path/to/MMIN
  pip install torch   # CPU build; not a dependency of mmer_jax
  python benchmarks/authors_mmin_step.py --authors_repo=/path/to/MMIN --steps 10

Nothing of their code is copied here: the script imports `models.mmin_model.MMINModel` and their
network classes from `--authors_repo` and calls their `set_input`, `optimize_parameters` (forward,
CE + MSE + cycle loss, per-network clipping, Adam) and `test` on a stand-in object that carries the
attributes those methods read. `MMINModel.__init__` itself is bypassed only because it loads a
pretrained checkpoint from disk and moves everything to CUDA; the networks are built with the
arguments of their `scripts/CAP_mmin.sh` (ComParE 130-d, DenseFace 342-d, BERT-large 1024-d,
AE 256,128,64 x 5 blocks, classifier 128,128, dropout 0.5, Adam lr 2e-4, beta1 0.5, loss weights
1 / 4 / 2) and the teacher encoders are their `UttFusionModel` networks in eval mode.
Shapes: batch 128, audio T=100, visual T=50, text T=22 (the synthetic iemocap_4 set). Prints one
JSON line, comparable with `python -m mmer_jax.benchmark --config=configs/mmin_iemocap.py:synthetic`.
"""

import argparse
import json
import statistics
import sys
import time


def build(repo: str, batch: int):
  sys.path.insert(0, repo)
  import torch  # pylint: disable=g-import-not-at-top
  from models.mmin_model import MMINModel  # pylint: disable=g-import-not-at-top
  from models.networks.autoencoder import ResidualAE  # pylint: disable=g-import-not-at-top
  from models.networks.classifier import FcClassifier  # pylint: disable=g-import-not-at-top
  from models.networks.lstm import LSTMEncoder  # pylint: disable=g-import-not-at-top
  from models.networks.textcnn import TextCNN  # pylint: disable=g-import-not-at-top

  class AuthorsStep:
    """Carries what their MMINModel methods read; the methods themselves are theirs."""
    set_input = MMINModel.set_input
    forward = MMINModel.forward
    backward = MMINModel.backward
    optimize_parameters = MMINModel.optimize_parameters

  def encoders():
    return (LSTMEncoder(130, 128, embd_method='maxpool'), TextCNN(1024, 128),
            LSTMEncoder(342, 128, 'maxpool'))

  torch.manual_seed(0)
  s = AuthorsStep()
  s.device, s.isTrain = torch.device('cpu'), True
  s.netA, s.netL, s.netV = encoders()
  s.netAE = ResidualAE([256, 128, 64], 5, 384, dropout=0, use_bn=False)
  s.netAE_cycle = ResidualAE([256, 128, 64], 5, 384, dropout=0, use_bn=False)
  s.netC = FcClassifier(320, [128, 128], output_dim=4, dropout=0.5, use_bn=False)
  s.model_names = ['A', 'V', 'L', 'C', 'AE', 'AE_cycle']
  teacher = argparse.Namespace()
  teacher.netA, teacher.netL, teacher.netV = encoders()
  for net in (teacher.netA, teacher.netL, teacher.netV):
    net.eval()
  s.pretrained_encoder = teacher
  s.criterion_ce, s.criterion_mse = torch.nn.CrossEntropyLoss(), torch.nn.MSELoss()
  s.optimizer = torch.optim.Adam(
      [{'params': getattr(s, 'net' + n).parameters()} for n in s.model_names], lr=2e-4,
      betas=(0.5, 0.999))
  s.ce_weight, s.mse_weight, s.cycle_weight = 1.0, 4.0, 2.0
  patterns = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]])
  data = {'A_feat': torch.randn(batch, 100, 130), 'V_feat': torch.randn(batch, 50, 342),
          'L_feat': torch.randn(batch, 22, 1024), 'label': torch.randint(0, 4, (batch,)),
          'missing_index': patterns[torch.randint(0, 6, (batch,))]}
  return torch, s, data


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--authors_repo', required=True, help='a checkout of AIM3-RUC/MMIN (master)')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--batch', type=int, default=128)
  args = parser.parse_args()
  torch, s, data = build(args.authors_repo, args.batch)

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
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t0)
    return times

  train_times = timed(train_step)
  eval_times = timed(eval_step)
  med = statistics.median(train_times)
  print(json.dumps({'framework': 'torch (authors\' MMINModel methods)', 'torch': torch.__version__,
                    'threads': torch.get_num_threads(), 'batch': args.batch, 'step_s_median': med,
                    'step_s_min': min(train_times), 'examples_per_s': args.batch / med,
                    'eval_step_s_median': statistics.median(eval_times)}))


if __name__ == '__main__':
  main()
