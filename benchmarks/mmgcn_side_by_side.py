"""MMGCN speed, ours against the authors' PyTorch code, measured one after the other on this machine.

  python benchmarks/mmgcn_side_by_side.py --authors_repo=/path/to/MMGCN --out=docs/results/mmgcn_speed

Runs, each in its own process so that neither side's threads or caches touch the other's:

  ours      python -m mmer_jax.benchmark --config=configs/mmgcn_iemocap.py:synthetic with 16
            dialogues per batch (train and eval), at each depth (`--depths`, default 64 and 4), in
            the authors' layer form (`gcn_form=authors`, their variant=True), with `--flops` and
            `--epoch_repeats`: once with the training batches grouped by length
            (`data.length_grouping=sorted`, the MMGCN configs' default) and once without ('none').
  authors   benchmarks/authors_mmgcn_step.py at the same depths: on the dialogues of our
            unbucketed first training batch and first eval batch (the same turns on both sides),
            and over whole epochs: the unbucketed training epoch's batches (their sampler is a
            random one too) and the eval split's batches.

Figures: seconds per step on the same batch; utterances per second over a whole training epoch
(ours with and without length grouping, theirs) and a whole inference epoch (the same batches on
both sides); the padding waste (share of turn slots that are padding) of our training epochs;
our achieved GFLOP/s (XLA's FLOP count of a step, the GCN scan counted unrolled, over the median
step time). Writes `<out>.json` (every raw report and the ratios) and `<out>.md`.
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import timing  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
CONFIG = 'configs/mmgcn_iemocap.py:synthetic'
GROUPINGS = ('sorted', 'none')


def _json_line(cmd):
  return timing.json_line(cmd, ROOT)


def ours(depth: int, steps: int, grouping: str, repeats: int, batch: int = 16, extra=()):
  return _json_line([sys.executable, '-m', 'mmer_jax.benchmark', f'--config={CONFIG}',
                     f'--config.data.batch_size={batch}', f'--config.data.eval_batch_size={batch}',
                     f'--config.data.length_grouping={grouping}',
                     f'--config.method.num_layers={depth}', '--config.method.gcn_form=authors',
                     f'--steps={steps}', '--warmup=1', '--flops', f'--epoch_repeats={repeats}', *extra])


def _batches(turns) -> str:
  return ';'.join(','.join(map(str, b)) for b in turns)


def authors(repo: str, depths, plain: dict, steps: int, repeats: int):
  return _json_line([sys.executable, 'benchmarks/authors_mmgcn_step.py', f'--authors_repo={repo}',
                     f'--depths={",".join(str(d) for d in depths)}', f'--steps={steps}',
                     f'--turns={",".join(map(str, plain["dialogue_turns"]))}',
                     f'--eval_turns={",".join(map(str, plain["eval_dialogue_turns"]))}',
                     f'--epoch_batches={_batches(plain["train_epoch"]["dialogue_turns"])}',
                     f'--eval_epoch_batches={_batches(plain["eval_epoch"]["dialogue_turns"])}',
                     f'--epoch_repeats={repeats}'])


def ratios(report) -> dict:
  """Per depth: ours / theirs in utterances per second (= their seconds / ours on one batch)."""
  a, out = report['authors'], {}
  for depth, runs in report['ours'].items():
    plain, grouped = runs['none'], runs['sorted']
    out[depth] = {
        'train_step': a[f'train_depth{depth}']['median'] / plain['step_s_median'],
        'infer_step': a[f'infer_depth{depth}']['median'] / plain['eval_step_s_median'],
        'train_epoch_sorted': grouped['train_epoch']['examples_per_s']
                              / a[f'train_epoch_depth{depth}']['utterances_per_s'],
        'train_epoch_none': plain['train_epoch']['examples_per_s']
                            / a[f'train_epoch_depth{depth}']['utterances_per_s'],
        'infer_epoch': grouped['eval_epoch']['examples_per_s']
                       / a[f'infer_epoch_depth{depth}']['utterances_per_s'],
    }
  return out


def table(report) -> str:
  a, r = report['authors'], report['ratios']
  rows = ['One batch, the same dialogues on both sides (seconds per step, median):', '',
          '| depth | utterances (train / eval) | authors train s | ours train s | ratio | '
          'authors infer s | ours infer s | ratio | ours train / infer GFLOP/s |',
          '|---|---|---|---|---|---|---|---|---|']
  for depth, runs in sorted(report['ours'].items(), key=lambda kv: -int(kv[0])):
    o = runs['none']
    rows.append(f'| {depth} | {sum(o["dialogue_turns"])} / {sum(o["eval_dialogue_turns"])} | '
                f'{a[f"train_depth{depth}"]["median"]:.3f} | {o["step_s_median"]:.3f} | '
                f'{r[depth]["train_step"]:.1f}x | {a[f"infer_depth{depth}"]["median"]:.3f} | '
                f'{o["eval_step_s_median"]:.3f} | {r[depth]["infer_step"]:.1f}x | '
                f'{o["train_gflops_per_s"]:.1f} / {o["eval_gflops_per_s"]:.1f} |')
  rows += ['', 'Whole epochs (utterances per second at the median epoch time; training: the '
           'training split, inference: the test split):', '',
           '| depth | authors train | ours train, sorted | ratio | ours train, unsorted | ratio | '
           'padding waste sorted / unsorted | authors infer | ours infer | ratio |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for depth, runs in sorted(report['ours'].items(), key=lambda kv: -int(kv[0])):
    g, o = runs['sorted'], runs['none']
    rows.append(f'| {depth} | {a[f"train_epoch_depth{depth}"]["utterances_per_s"]:.0f} | '
                f'{g["train_epoch"]["examples_per_s"]:.0f} | {r[depth]["train_epoch_sorted"]:.1f}x | '
                f'{o["train_epoch"]["examples_per_s"]:.0f} | {r[depth]["train_epoch_none"]:.1f}x | '
                f'{g["train_epoch"]["padding_waste"]:.2f} / {o["train_epoch"]["padding_waste"]:.2f} | '
                f'{a[f"infer_epoch_depth{depth}"]["utterances_per_s"]:.0f} | '
                f'{g["eval_epoch"]["examples_per_s"]:.0f} | {r[depth]["infer_epoch"]:.1f}x |')
  return '\n'.join(rows) + '\n'


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--authors_repo', required=True)
  parser.add_argument('--out', default='runs/mmgcn_speed')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--epoch_repeats', type=int, default=2)
  parser.add_argument('--depths', default='64,4')
  opts = parser.parse_args()
  depths = [int(d) for d in opts.depths.split(',')]
  report = {'ours': {str(d): {g: ours(d, opts.steps, g, opts.epoch_repeats) for g in GROUPINGS}
                     for d in depths}}
  plain = report['ours'][str(depths[0])]['none']
  report['authors'] = authors(opts.authors_repo, depths, plain, opts.steps, opts.epoch_repeats)
  report['ratios'] = ratios(report)
  timing.write_report(opts.out, report, table(report))


if __name__ == '__main__':
  main()
