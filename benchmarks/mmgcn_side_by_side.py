"""MMGCN speed, ours against the authors' PyTorch code, measured one after the other on this machine.

  python benchmarks/mmgcn_side_by_side.py --authors_repo=/path/to/MMGCN --out=docs/results/mmgcn_speed

Runs, each in its own process so that neither side's threads or caches touch the other's:

  ours      python -m mmer_jax.benchmark --config=configs/mmgcn_iemocap.py:synthetic with 16
            dialogues per batch (train and eval), at each depth (`--depths`, default 64 and 4),
            in the authors' layer form (`gcn_form=authors`, their variant=True); the report
            names the dialogues' turns.
  authors   benchmarks/authors_mmgcn_step.py on dialogues of exactly those turns, at the same depths.

Writes `<out>.json` (every raw report and the ratios) and `<out>.md` (seconds per step, medians,
and authors / ours).
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import timing  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
CONFIG = 'configs/mmgcn_iemocap.py:synthetic'


def _json_line(cmd):
  return timing.json_line(cmd, ROOT)


def ours(depth: int, steps: int, batch: int = 16, extra=()):
  return _json_line([sys.executable, '-m', 'mmer_jax.benchmark', f'--config={CONFIG}',
                     f'--config.data.batch_size={batch}', f'--config.data.eval_batch_size={batch}',
                     f'--config.method.num_layers={depth}', '--config.method.gcn_form=authors',
                     f'--steps={steps}', '--warmup=1', *extra])


def authors(repo: str, depths, turns, eval_turns, steps: int):
  return _json_line([sys.executable, 'benchmarks/authors_mmgcn_step.py', f'--authors_repo={repo}',
                     f'--depths={",".join(str(d) for d in depths)}', f'--steps={steps}',
                     f'--turns={",".join(map(str, turns))}', f'--eval_turns={",".join(map(str, eval_turns))}'])


def table(report) -> str:
  rows = ['| depth | utterances (train / eval) | authors train s | ours train s | ratio | '
          'authors infer s | ours infer s | ratio |', '|---|---|---|---|---|---|---|---|']
  a = report['authors']
  for depth, r in sorted(report['ours'].items(), key=lambda kv: -int(kv[0])):
    at, ai = a[f'train_depth{depth}']['median'], a[f'infer_depth{depth}']['median']
    rows.append(f'| {depth} | {sum(r["dialogue_turns"])} / {sum(r["eval_dialogue_turns"])} | '
                f'{at:.3f} | {r["step_s_median"]:.3f} | {at / r["step_s_median"]:.1f}x | {ai:.3f} | '
                f'{r["eval_step_s_median"]:.3f} | {ai / r["eval_step_s_median"]:.1f}x |')
  return '\n'.join(rows) + '\n'


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--authors_repo', required=True)
  parser.add_argument('--out', default='runs/mmgcn_speed')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--depths', default='64,4')
  opts = parser.parse_args()
  depths = [int(d) for d in opts.depths.split(',')]
  report = {'ours': {str(d): ours(d, opts.steps) for d in depths}}
  first = report['ours'][str(depths[0])]
  report['authors'] = authors(opts.authors_repo, depths, first['dialogue_turns'],
                              first['eval_dialogue_turns'], opts.steps)
  timing.write_report(opts.out, report, table(report))


if __name__ == '__main__':
  main()
