"""IMDer speed, ours against the authors' PyTorch code, measured one after the other on this machine.

  python benchmarks/imder_side_by_side.py --authors_repo=/path/to/IMDer --out=docs/results/imder_speed

Runs, each in its own process so that neither side's threads or caches touch the other's:

  authors   benchmarks/authors_imder_step.py: their IMDER (MOSI config, batch 32, their 100-step
            Euler-Maruyama), train step and inference for complete data, one and two modalities
            missing (their num_modal = 3, 2, 1).
  ours      python -m mmer_jax.benchmark --config=configs/imder_mosi.py:synthetic with batch 32
            (train and eval), `--config.train.missing=none|drop_one|drop_two` (the eval batch is
            dropped the same way), once with the authors' sampler (EM, 100 steps, in training
            and evaluation) and once with the fast sampler (DPM-Solver-2, 5 steps = NFE 10, which
            meets the accuracy target in docs/imder.md).
  mosei     with --mosei: the same complete-data train step at MOSEI's batch 128 on both sides.

Writes `<out>.json` (every raw report and the ratios) and `<out>.md` (the table: seconds per
step, medians, authors / ours, and our achieved GFLOP/s: XLA's FLOP count of the step, from
`benchmark --flops`, over its median time). Only medians of the timed calls are compared.
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import timing  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
CASES = ('complete', 'drop_one', 'drop_two')
MISSING = {'complete': 'none', 'drop_one': 'drop_one', 'drop_two': 'drop_two'}
SAMPLERS = {
    'em100': [],
    'fast': ['--config.method.sampler=dpm_solver', '--config.method.num_steps=5',
             '--config.method.train_sampler=dpm_solver', '--config.method.train_num_steps=5'],
}


def _json_line(cmd):
  return timing.json_line(cmd, ROOT)


def authors(repo, steps, dataset='mosi', batch=32, cases=CASES, modes='train,infer'):
  return _json_line([sys.executable, 'benchmarks/authors_imder_step.py', f'--authors_repo={repo}',
                     f'--steps={steps}', f'--dataset={dataset}', f'--batch={batch}',
                     f'--cases={",".join(cases)}', f'--modes={modes}'])


def ours(case, sampler, steps, config='configs/imder_mosi.py:synthetic', batch=32):
  return _json_line([sys.executable, '-m', 'mmer_jax.benchmark', f'--config={config}',
                     f'--config.data.batch_size={batch}', f'--config.data.eval_batch_size={batch}',
                     f'--config.train.missing={MISSING[case]}', f'--steps={steps}', '--warmup=1',
                     '--flops', *SAMPLERS[sampler]])


def _rate(report, prefix):
  """Our achieved GFLOP/s (XLA's FLOP count / median step time) of `benchmark --flops`."""
  rate = report.get(f'{prefix}_gflops_per_s')
  return '—' if rate is None else f'{rate:.1f}'


def table(report):
  rows = ['| case | sampler | authors train s | ours train s | ratio | authors infer s | '
          'ours infer s | ratio | ours train / infer GFLOP/s |', '|---|---|---|---|---|---|---|---|---|']
  for key, r in report['ours'].items():
    case, sampler = key.split('/')
    a_train = report['authors'][f'train_{case}']['median']
    a_infer = report['authors'][f'infer_{case}']['median']
    rows.append(f'| {case} | {sampler} | {a_train:.3f} | {r["step_s_median"]:.3f} | '
                f'{a_train / r["step_s_median"]:.1f}x | {a_infer:.3f} | '
                f'{r["eval_step_s_median"]:.3f} | {a_infer / r["eval_step_s_median"]:.1f}x | '
                f'{_rate(r, "train")} / {_rate(r, "eval")} |')
  if 'mosei' in report:
    m = report['mosei']
    a = m['authors']['train_complete']['median']
    rows.append(f'| MOSEI batch 128, complete | — | {a:.3f} | {m["ours"]["step_s_median"]:.3f} | '
                f'{a / m["ours"]["step_s_median"]:.1f}x | | | | {_rate(m["ours"], "train")} |')
  return '\n'.join(rows) + '\n'


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--authors_repo', required=True)
  parser.add_argument('--out', default='runs/imder_speed')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--cases', default=','.join(CASES))
  parser.add_argument('--samplers', default='em100,fast')
  parser.add_argument('--mosei', action='store_true')
  opts = parser.parse_args()
  cases = opts.cases.split(',')
  report = {'authors': authors(opts.authors_repo, opts.steps, cases=cases), 'ours': {}}
  for case in cases:
    for sampler in opts.samplers.split(','):
      if case == 'complete' and sampler != 'em100':
        continue  # nothing is drawn: the sampler does not matter
      report['ours'][f'{case}/{sampler}'] = ours(case, sampler, opts.steps)
  if opts.mosei:
    report['mosei'] = {
        'authors': authors(opts.authors_repo, opts.steps, 'mosei', 128, ('complete',), 'train'),
        'ours': ours('complete', 'em100', opts.steps, 'configs/imder_mosei.py:synthetic', 128)}
  timing.write_report(opts.out, report, table(report))


if __name__ == '__main__':
  main()
