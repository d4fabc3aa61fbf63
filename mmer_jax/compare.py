"""The one aggregator of finished runs, sweeps and tables (docs/compare.md): methods x grid rows,
robustness curves and complexity, on one dataset.

  python -m mmer_jax.compare runs/fusion_s0 runs/fusion_s1 runs/mmin_sweep --out=runs/compare
  python -m mmer_jax.compare runs/table --out=runs/compare --metrics=ua,wa --nocomplexity

Arguments are run directories, sweep directories or folders holding them. Runs are grouped into
entries (the same method and resolved config but the seed and `*dir` fields), labelled by the
fields in which entries differ. `summarize` (mean, sample std, n) and `format_cell` are the
statistics and the cell format that sweeps (`sweep.py`) and paper tables (`tables.py`) use too.
Writes compare.md / compare.json, robustness_<metric>.png and complexity.md into `--out`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Iterable

from absl import app
from absl import flags
from absl import logging
import numpy as np

from mmer_jax import evaluate
from mmer_jax import metrics as metrics_lib
from mmer_jax import writers

RESULTS, CONFIG, SWEEP = 'results.json', 'config.json', 'sweep.json'
# Fields every results.json has (evaluate.make_results and train.evaluate_stage), and every row.
RESULTS_FIELDS = ('method', 'dataset', 'split', 'seed', 'task', 'rows')
ROW_FIELDS = ('condition', 'metrics')
# What the tables show unless --metrics says otherwise: the numbers papers report.
DEFAULT_METRICS = {'classification': ('wa', 'ua', 'weighted_f1'),
                   'regression': ('mae', 'corr', 'acc2')}
LOWER_IS_BETTER = ('mae',)
STD_NOTE = 'mean ± sample standard deviation (ddof=1) over the runs (seeds) of an entry'


class CompareError(ValueError):
  """A run, sweep or argument that cannot be compared; the message names the file or field."""


@dataclasses.dataclass(frozen=True)
class RunDir:
  """One finished run: its directory, results.json and config.json (as dicts)."""
  path: str
  results: dict
  config: dict

  @property
  def seed(self) -> int:
    return int(self.results['seed'])


@dataclasses.dataclass
class Entry:
  """Runs of one method and config that differ only in the seed (and paths)."""
  method: str
  variant: str | None
  fields: dict  # the config, flattened, without the ignored fields
  runs: list[RunDir]
  label: str = ''
  differing: dict = dataclasses.field(default_factory=dict)  # fields that differ within its method

  @property
  def base(self) -> str:
    """method, or method/variant when the variant is not just the method's name."""
    if not self.variant or self.variant == self.method:
      return self.method
    return f'{self.method}/{self.variant}'


# -- finding runs ---------------------------------------------------------------------------------


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CompareError(f'{path}: not valid JSON ({e})') from e


def sweep_members(sweep_dir: str) -> list[str]:
  """The run directories of a sweep's members (`sweep.json`: members[].workdir, relative to
  the sweep); each must have finished (have its results.json)."""
  path = os.path.join(sweep_dir, SWEEP)
  sweep = _read_json(path)
  if 'members' not in sweep:
    raise CompareError(f"{path}: missing field 'members'")
  out = []
  for i, member in enumerate(sweep['members']):
    if 'workdir' not in member:
      raise CompareError(f"{path}: members[{i}] has no field 'workdir'")
    workdir = os.path.join(sweep_dir, member['workdir'])
    if not os.path.exists(os.path.join(workdir, RESULTS)):
      raise CompareError(f"{path}: member {member.get('name', i)!r} ({workdir}) has no {RESULTS} "
                         '(not finished?)')
    out.append(workdir)
  return out


def _search(folder: str) -> list[str]:
  """Runs under `folder`, depth first in name order: a sweep gives its members, a run itself;
  neither is searched further (a staged run's stage directories are part of it)."""
  found = []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    if SWEEP in files:
      found += sweep_members(root)
      dirs[:] = []
    elif RESULTS in files:
      found.append(root)
      dirs[:] = []
  return found


def find_runs(arguments: Iterable[str]) -> list[str]:
  """Run directories of the arguments (runs, sweeps, folders holding them), each once (by real
  path), in the order given."""
  found = []
  for arg in arguments:
    if os.path.isfile(os.path.join(arg, SWEEP)):
      runs = sweep_members(arg)
    elif os.path.isfile(os.path.join(arg, RESULTS)):
      runs = [arg]
    elif os.path.isdir(arg):
      runs = _search(arg)
    else:
      runs = []
    if not runs:
      raise CompareError(f'{arg}: neither a run ({RESULTS}), a sweep ({SWEEP}) nor a folder '
                         'holding any')
    found += runs
  unique = {}
  for run in found:
    unique.setdefault(os.path.realpath(run), os.path.normpath(run))
  return list(unique.values())


def load_run(path: str) -> RunDir:
  """A run's results.json (its fields checked) and config.json."""
  results_path, config_path = os.path.join(path, RESULTS), os.path.join(path, CONFIG)
  results = _read_json(results_path)
  for field in RESULTS_FIELDS:
    if field not in results:
      raise CompareError(f'{results_path}: missing field {field!r}')
  for i, row in enumerate(results['rows']):
    for field in ROW_FIELDS:
      if field not in row:
        raise CompareError(f'{results_path}: rows[{i}] has no field {field!r}')
  if not os.path.isfile(config_path):
    raise CompareError(f'{path}: no {CONFIG} (the resolved config the run wrote)')
  return RunDir(path, results, _read_json(config_path))


def dataset_of(run: RunDir) -> str:
  """The dataset a run was evaluated on: results.json's name, and for a generic feature
  directory (all named `features_dir`) the directory's name too."""
  name = run.results['dataset']
  features_dir = run.config.get('data', {}).get('features_dir')
  if name == 'features_dir' and features_dir:
    return f'{name}:{os.path.basename(os.path.normpath(features_dir))}'
  return name


def _some(paths: list[str], most: int = 4) -> str:
  """The first `most` paths, and how many more."""
  more = f' and {len(paths) - most} more' if len(paths) > most else ''
  return ', '.join(paths[:most]) + more


def check_one_dataset(runs: list[RunDir]) -> tuple[str, str, str]:
  """(dataset, split, task) shared by all runs; else an error naming each one's runs."""
  groups: dict[tuple, list[str]] = {}
  for run in runs:
    key = (dataset_of(run), run.results['split'], run.results['task'])
    groups.setdefault(key, []).append(run.path)
  if len(groups) > 1:
    lines = '\n'.join(f'  {d} ({s} split, {t}): {_some(paths)}' for (d, s, t), paths in groups.items())
    raise CompareError(f'the runs are on {len(groups)} datasets/splits; compare one at a time:\n{lines}')
  return next(iter(groups))


# -- grouping into entries ------------------------------------------------------------------------


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  """{dotted name: value} of a nested dict; lists become tuples (hashable, comparable)."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out.update(flatten(value, name + '.'))
    else:
      out[name] = tuple(value) if isinstance(value, list) else value
  return out


def is_ignored(field: str) -> bool:
  """Fields that do not make runs different entries: the seed (the main one and each stage's)
  and path-like fields (`data_dir`, `manual_dir`, `features_dir`, `workdir`, ...: where things
  lie, not what ran)."""
  parts = field.split('.')
  if parts[-1] == 'seed' and (len(parts) == 1 or (parts[0] == 'stages' and len(parts) == 3)):
    return True
  return parts[-1].endswith('dir')


def _json_key(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=str)


def group_runs(runs: list[RunDir]) -> list[Entry]:
  """Entries in order of their first run; each entry's runs sorted by seed. Two runs of an entry
  with the same seed are an error (the mean would count one result twice)."""
  entries: dict[str, Entry] = {}
  for run in runs:
    fields = {k: v for k, v in flatten(run.config).items() if not is_ignored(k)}
    variant = run.results.get('variant') or run.config.get('method', {}).get('variant')
    key = _json_key([run.results['method'], variant, sorted(fields.items())])
    entry = entries.setdefault(key, Entry(run.results['method'], variant, fields, []))
    entry.runs.append(run)
  for entry in entries.values():
    entry.runs.sort(key=lambda r: r.seed)
    seeds = [r.seed for r in entry.runs]
    for seed in sorted({s for s in seeds if seeds.count(s) > 1}):
      same = [r.path for r in entry.runs if r.seed == seed]
      raise CompareError(f'{entry.base}: runs {", ".join(same)} have the same config and seed {seed}; '
                         'pass one of them')
  return label_entries(list(entries.values()))


def _format_value(value: Any) -> str:
  if isinstance(value, tuple):
    return json.dumps(list(value), separators=(',', ':'), default=str)
  return str(value)


_ABSENT = '<absent>'


def _reference(values: list[str]) -> str | None:
  """The value most entries share, when strictly more share it than any other value."""
  counts = sorted(((values.count(v), v) for v in set(values)), reverse=True)
  return counts[0][1] if len(counts) == 1 or counts[0][0] > counts[1][0] else None


def label_entries(entries: list[Entry]) -> list[Entry]:
  """Sets each entry's `differing` (every field in which entries of its method and variant
  differ, with its value) and `label`: method[/variant] and those of the fields where its value
  is not the one most of them share (all of them where no value is shared by most). Labels are
  unique: two entries with the same label agree on every field."""
  by_base: dict[str, list[Entry]] = {}
  for entry in entries:
    by_base.setdefault(entry.base, []).append(entry)
  for group in by_base.values():
    names = sorted({k for e in group for k in e.fields})
    values = {k: [_json_key(e.fields.get(k, _ABSENT)) for e in group] for k in names}
    differ = [k for k in names if len(set(values[k])) > 1]
    reference = {k: _reference(values[k]) for k in differ}
    for entry in group:
      entry.differing = {k: entry.fields.get(k, _ABSENT) for k in differ}
      shown = [f'{k}={_format_value(v)}' for k, v in entry.differing.items()
               if _json_key(v) != reference[k]]
      entry.label = ' '.join([entry.base] + shown)
  return entries


# -- statistics -----------------------------------------------------------------------------------


def summarize(values: Iterable[float]) -> dict[str, Any]:
  """{mean, std, n, values}: std is the sample standard deviation (ddof=1), None for one value."""
  v = np.asarray(list(values), np.float64)
  return {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if len(v) > 1 else None,
          'n': int(len(v)), 'values': v.tolist()}


def grid_conditions(entries: list[Entry]) -> list[str]:
  """The union of the runs' grid rows, in the order they first appear."""
  names = (row['condition'] for e in entries for r in e.runs for row in r.results['rows'])
  return list(dict.fromkeys(names))


def cells(entry: Entry, conditions: list[str], metrics: list[str]) -> dict[str, dict[str, dict]]:
  """{condition: {metric: summary}} of an entry over its runs (a run without the row or the
  metric does not count; no run with it: no cell)."""
  out = {}
  for condition in conditions:
    rows = [row for r in entry.runs for row in r.results['rows'] if row['condition'] == condition]
    out[condition] = {m: summarize(row['metrics'][m] for row in rows if m in row['metrics'])
                      for m in metrics if any(m in row['metrics'] for row in rows)}
  return out


def check_metrics(metrics: Iterable[str] | None, task: str) -> list[str]:
  """The metrics to show: `metrics`, checked against what the task computes, or the task's
  defaults (DEFAULT_METRICS)."""
  keys = metrics_lib.CLASSIFICATION_KEYS if task == 'classification' else metrics_lib.REGRESSION_KEYS
  if not metrics:
    return list(DEFAULT_METRICS[task])
  unknown = [m for m in metrics if m not in keys]
  if unknown:
    raise CompareError(f'--metrics: {unknown} not computed for {task}; expected some of {list(keys)}')
  return list(metrics)


# -- tables ---------------------------------------------------------------------------------------


def format_cell(summary: dict | None, n_runs: int) -> str:
  """`mean ± std` (4 decimals), `(k)` after it when only k of the entry's runs have the cell."""
  if summary is None:
    return ''
  text = f"{summary['mean']:.4f}"
  if summary['std'] is not None:
    text += f" ± {summary['std']:.4f}"
  if summary['n'] != n_runs:
    text += f" ({summary['n']})"
  return text


def _best(entries: list[dict], condition: str, metric: str) -> float | None:
  """The best mean in a column (lowest for LOWER_IS_BETTER), None with fewer than two entries."""
  means = [e['cells'][condition][metric]['mean'] for e in entries
           if metric in e['cells'].get(condition, {})]
  if len(means) < 2:
    return None
  return min(means) if metric in LOWER_IS_BETTER else max(means)


def metric_table(report: dict, metric: str) -> list[str]:
  """Markdown lines of one metric's table: an entry per row, a grid row per column."""
  conditions = report['conditions']
  lines = ['| entry | n | ' + ' | '.join(conditions) + ' |', '|---|---|' + '---|' * len(conditions)]
  best = {c: _best(report['entries'], c, metric) for c in conditions}
  for entry in report['entries']:
    row = []
    for c in conditions:
      summary = entry['cells'].get(c, {}).get(metric)
      text = format_cell(summary, entry['n'])
      row.append(f'**{text}**' if summary and summary['mean'] == best[c] else text)
    lines.append(f"| {entry['label']} | {entry['n']} | " + ' | '.join(row) + ' |')
  return lines


def compare_markdown(report: dict) -> str:
  """compare.md: the entries and their runs, then one table per metric."""
  lines = [f"# Comparison on {report['dataset']} ({report['split']} split, {report['task']})", '',
           f"Cells: {STD_NOTE}; n: the entry's runs; `(k)`: only k of them have that cell. "
           'Best mean of a column in bold (lowest for ' + ', '.join(LOWER_IS_BETTER) + ').', '',
           '| entry | method | seeds | runs |', '|---|---|---|---|']
  for entry in report['entries']:
    lines.append(f"| {entry['label']} | {entry['method']} | {', '.join(map(str, entry['seeds']))} | "
                 + ', '.join(entry['runs']) + ' |')
  for metric in report['metrics']:
    lines += ['', f'## {metric}', ''] + metric_table(report, metric)
  if report.get('complexity_md'):
    lines += ['', f"Complexity: see {report['complexity_md']}."]
  return '\n'.join(lines) + '\n'


def _si(value: float | None) -> str:
  """`21.9K`, `1.23M`, `4.56G`: three significant digits with an SI suffix."""
  if value is None:
    return ''
  for factor, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
    if abs(value) >= factor:
      return f'{value / factor:.3g}{suffix}'
  return f'{value:.3g}'


COMPLEXITY_COLUMNS = ('entry', 'trainable params', 'all params', 'FLOPs / example',
                      'train step ms (median)', 'examples / s', 'step memory MiB', 'compile s')


def complexity_markdown(report: dict) -> str:
  """complexity.md: one row per entry (its first run's config, on one device)."""
  measured = [e['complexity'] for e in report['entries']
              if e.get('complexity') and 'error' not in e['complexity']]
  kinds = dict.fromkeys(f"{m['backend']} ({m['device_kind']})" if m['device_kind'] != m['backend']
                       else m['backend'] for m in measured)
  where = f" on {', '.join(kinds)}" if kinds else ''
  lines = [f"# Complexity on {report['dataset']}{where}", '',
           'Per entry, from its first run\'s config.json, on one device: parameters from the best '
           'checkpoint, FLOPs from XLA\'s cost analysis of the compiled train step over the '
           'examples of its batch, memory from XLA\'s buffer assignment of that step '
           '(arguments + outputs - donated + temporaries), step times from '
           '`mmer_jax.benchmark` (median of the timed steps). See docs/compare.md.', '',
           '| ' + ' | '.join(COMPLEXITY_COLUMNS) + ' |', '|' + '---|' * len(COMPLEXITY_COLUMNS)]
  for entry in report['entries']:
    c = entry.get('complexity') or {}
    if 'error' in c:
      lines.append(f"| {entry['label']} | not measured: {c['error']} |"
                   + ' |' * (len(COMPLEXITY_COLUMNS) - 2))
      continue
    lines.append('| ' + ' | '.join([
        entry['label'], f"{c['params_trainable']:,}", f"{c['params_total']:,}",
        _si(c['flops_per_example']),
        f"{1000 * c['step_s_median']:.2f}", f"{c['examples_per_s']:.0f}",
        f"{c['memory_bytes']['total'] / 2**20:.3g}", f"{c['compile_s']:.1f}"]) + ' |')
  return '\n'.join(lines) + '\n'


# -- robustness figure ----------------------------------------------------------------------------


def rate_curve(entry: Entry, conditions: list[str], metric: str) -> list[tuple[float, dict]]:
  """(missing rate, summary) of an entry's one-rate rows (`rate=<r>`, sorted by r; per-modality
  rates are left out), with `full` at 0 when there is no `rate=0.0` row."""
  points = {}
  for condition in conditions:
    if condition.startswith('rate='):
      rate = evaluate.parse_rate(condition)
      if not isinstance(rate, tuple):
        points[float(rate)] = condition
  if 0.0 not in points and 'full' in conditions:
    points[0.0] = 'full'
  table = cells(entry, [points[x] for x in sorted(points)], [metric])
  return [(x, table[points[x]][metric]) for x in sorted(points) if metric in table[points[x]]]


def plot_robustness(entries: list[Entry], conditions: list[str], metric: str, path: str,
                    title: str) -> str | None:
  """robustness_<metric>.png: one line per entry (mean over its runs), a band of mean ± std
  where it has several; None (nothing written) when no entry has two rates to draw a line."""
  curves = [(e.label, rate_curve(e, conditions, metric)) for e in entries]
  if not any(len(points) > 1 for _, points in curves):
    logging.info('no rate rows: no robustness_%s.png', metric)
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  try:
    for label, points in curves:
      if not points:
        continue
      x = np.array([p[0] for p in points])
      mean = np.array([p[1]['mean'] for p in points])
      std = np.array([p[1]['std'] or 0.0 for p in points])
      line, = ax.plot(x, mean, marker='o', markersize=3, label=label)
      if any(p[1]['std'] is not None for p in points):
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel='missing rate (per sample and modality)', ylabel=f'{metric} (mean ± std over seeds)',
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
  finally:
    plt.close(fig)
  return path


# -- the comparison -------------------------------------------------------------------------------


def entry_report(entry: Entry, conditions: list[str], metrics: list[str]) -> dict:
  """An entry as compare.json stores it."""
  return {'label': entry.label, 'method': entry.method, 'variant': entry.variant,
          'fields': {k: list(v) if isinstance(v, tuple) else v for k, v in entry.differing.items()},
          'seeds': [r.seed for r in entry.runs], 'runs': [r.path for r in entry.runs],
          'n': len(entry.runs), 'cells': cells(entry, conditions, metrics)}


def measure_complexity(entry: Entry, *, steps: int, warmup: int) -> dict:
  """The complexity report of an entry's first run (mmer_jax/complexity.py); when it cannot be
  measured (e.g. its data is not where its config says), {'error': why}, so that the metric
  tables are still written."""
  from mmer_jax import complexity  # pylint: disable=g-import-not-at-top
  run = entry.runs[0]
  try:
    config = complexity.load_config(os.path.join(run.path, CONFIG))
    return complexity.measure(config, run_dir=run.path, steps=steps, warmup=warmup)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('complexity of %s (%s) not measured: %r', entry.label, run.path, e)
    return {'error': f'{type(e).__name__}: {e}'.splitlines()[0]}


def compare(arguments: Iterable[str], out: str, *, metrics: Iterable[str] | None = None,
            complexity: bool = True, complexity_steps: int = 3, complexity_warmup: int = 1) -> dict:
  """Collects, groups and summarises the runs of `arguments`; writes the files into `out` and
  returns the report (compare.json's content)."""
  runs = [load_run(p) for p in find_runs(arguments)]
  dataset, split, task = check_one_dataset(runs)
  metrics = check_metrics(metrics, task)
  entries = group_runs(runs)
  conditions = grid_conditions(entries)
  report = {'dataset': dataset, 'split': split, 'task': task, 'metrics': metrics, 'std': STD_NOTE,
            'conditions': conditions,
            'entries': [entry_report(e, conditions, metrics) for e in entries]}
  os.makedirs(out, exist_ok=True)
  files = []
  for metric in metrics:
    png = plot_robustness(entries, conditions, metric, os.path.join(out, f'robustness_{metric}.png'),
                          f'{metric} on {dataset} ({split}) against the missing rate')
    if png:
      files.append(png)
  if complexity:
    for entry, row in zip(entries, report['entries']):
      row['complexity'] = measure_complexity(entry, steps=complexity_steps, warmup=complexity_warmup)
    report['complexity_md'] = 'complexity.md'
    files.append(writers.write_atomic(os.path.join(out, 'complexity.md'), complexity_markdown(report)))
  files.append(writers.write_atomic(os.path.join(out, 'compare.md'), compare_markdown(report)))
  report['files'] = [os.path.basename(f) for f in files] + ['compare.json']
  writers.write_atomic(os.path.join(out, 'compare.json'), json.dumps(report, indent=2))
  return report


def _define_flags():
  """Flags of the CLI, defined only when run as a program (importing this module defines none)."""
  return {
      'out': flags.DEFINE_string('out', None, 'Directory for compare.md/.json, the figures and '
                                 'complexity.md.'),
      'metrics': flags.DEFINE_list('metrics', None, 'Metrics to tabulate and plot (default: wa,ua,'
                                   'weighted_f1 for classification, mae,corr,acc2 for regression).'),
      'complexity': flags.DEFINE_boolean('complexity', True, 'Measure parameters, FLOPs, step time '
                                         'and memory per entry (compiles and runs its train step).'),
      'complexity_steps': flags.DEFINE_integer('complexity_steps', 3, 'Timed train/eval steps per '
                                               'entry.'),
      'complexity_warmup': flags.DEFINE_integer('complexity_warmup', 1, 'Untimed steps after the '
                                                'compiling one.'),
  }


def main(argv, *, options: dict) -> None:
  """`options`: the flag holders of `_define_flags` (anything with `.value`)."""
  if len(argv) < 2:
    raise app.UsageError('pass one or more run, sweep or folder directories')
  if not options['out'].value:
    raise app.UsageError('--out is required')
  try:
    report = compare(argv[1:], options['out'].value, metrics=options['metrics'].value,
                     complexity=options['complexity'].value,
                     complexity_steps=options['complexity_steps'].value,
                     complexity_warmup=options['complexity_warmup'].value)
  except CompareError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  print(f"{len(report['entries'])} entries from {sum(e['n'] for e in report['entries'])} runs; wrote "
        + ', '.join(os.path.join(options['out'].value, f) for f in report['files']))


if __name__ == '__main__':
  _options = _define_flags()
  app.run(lambda argv: main(argv, options=_options))
