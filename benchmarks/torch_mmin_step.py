"""A PyTorch MMIN training/inference step with the authors' shapes, for side-by-side timing.

  pip install torch==2.13.0   # CPU build; not a dependency of mmer_jax
  python benchmarks/torch_mmin_step.py --steps 10

Written here (not the authors' code) to match the computation MMIN's PyTorch release performs per
step: LSTM(130->128) and LSTM(342->128) encoders with max-pool over time, a TextCNN (3/4/5 x 128
over 1024-d tokens) + Linear(384->128), a frozen teacher copy of the three encoders run on the
full input without gradients, two 5-block residual autoencoders (384-256-128-64-128-256-384 plus
transition), a 320-128-128-4 classifier, loss CE + 4 MSE + 2 MSE, Adam. Batch 128, audio T=100,
visual T=50, text T=22 (the synthetic iemocap_4 shapes). Prints one JSON line.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn


class LSTMEnc(nn.Module):
  def __init__(self, d):
    super().__init__()
    self.rnn = nn.LSTM(d, 128, batch_first=True)

  def forward(self, x):
    return self.rnn(x)[0].max(dim=1).values


class TextCNN(nn.Module):
  def __init__(self, d=1024):
    super().__init__()
    self.convs = nn.ModuleList([nn.Conv1d(d, 128, k) for k in (3, 4, 5)])
    self.drop, self.out = nn.Dropout(0.5), nn.Linear(384, 128)

  def forward(self, x):
    x = x.transpose(1, 2)
    h = torch.cat([torch.relu(c(x)).max(dim=2).values for c in self.convs], dim=1)
    return torch.relu(self.out(self.drop(h)))


class Encoders(nn.Module):
  def __init__(self):
    super().__init__()
    self.a, self.v, self.t = LSTMEnc(130), LSTMEnc(342), TextCNN()

  def forward(self, a, v, t):
    return torch.cat([self.a(a), self.v(v), self.t(t)], dim=1)


def mlp(sizes, act):
  layers = []
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    layers.append(nn.Linear(m, n))
    if i < len(sizes) - 2:
      layers.append(act())
  return nn.Sequential(*layers)


class CRA(nn.Module):
  def __init__(self, blocks=5):
    super().__init__()
    self.enc = nn.ModuleList([mlp([384, 256, 128, 64], nn.LeakyReLU) for _ in range(blocks)])
    self.dec = nn.ModuleList([mlp([64, 128, 256, 384], nn.ReLU) for _ in range(blocks)])
    self.transition = mlp([384, 384, 384], nn.ReLU)

  def forward(self, x):
    x_in, x_out, latents = x, torch.zeros_like(x), []
    for enc, dec in zip(self.enc, self.dec):
      x_in = x_in + x_out
      z = enc(x_in)
      x_out = dec(z)
      latents.append(z)
    return self.transition(x_in + x_out), torch.cat(latents, dim=1)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--batch', type=int, default=128)
  args = parser.parse_args()
  torch.manual_seed(0)
  b = args.batch
  a, v, t = torch.randn(b, 100, 130), torch.randn(b, 50, 342), torch.randn(b, 22, 1024)
  y = torch.randint(0, 4, (b,))
  keep = torch.randint(0, 2, (b, 3)).float()
  student, teacher = Encoders(), Encoders().eval()
  cra, cycle = CRA(), CRA()
  clf = nn.Sequential(nn.Linear(320, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 128), nn.ReLU(),
                      nn.Dropout(0.5), nn.Linear(128, 4))
  params = [*student.parameters(), *cra.parameters(), *cycle.parameters(), *clf.parameters()]
  opt = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))

  def train_step():
    s = student(a * keep[:, :1, None], v * keep[:, 1:2, None], t * keep[:, 2:, None])
    imagined, latents = cra(s)
    back, _ = cycle(imagined)
    with torch.no_grad():
      target = teacher(a, v, t)
    loss = (nn.functional.cross_entropy(clf(latents), y) + 4 * nn.functional.mse_loss(imagined, target)
            + 2 * nn.functional.mse_loss(back, s.detach()))
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()

  @torch.no_grad()
  def eval_step():
    student.eval(); clf.eval()
    out = clf(cra(student(a, v, t))[1])
    student.train(); clf.train()
    return out

  train_step()
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter(); train_step(); times.append(time.perf_counter() - t0)
  eval_step()
  eval_times = []
  for _ in range(args.steps):
    t0 = time.perf_counter(); eval_step(); eval_times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  print(json.dumps({'framework': 'torch', 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                    'batch': b, 'step_s_median': med, 'step_s_min': min(times),
                    'examples_per_s': b / med, 'eval_step_s_median': statistics.median(eval_times)}))


if __name__ == '__main__':
  main()
