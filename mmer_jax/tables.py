"""Paper tables from a spec: rows of runs over seeds, aggregated by `compare`, ordered by `paired`.

A spec (`launch/tables/<name>.py`, `spec()` returning a `Spec`) names a config, the seeds and the
rows: each row the config with its own overrides (`{run:ROW}` in one: ROW's run of the same
seed), or another row's stage (`results_of`), a run that reuses another row's stage (`link`), or
the same run as another row (`same_as`). Every run is `<workdir>/<row>/seed=<k>/` (a plain
`mmer_jax.main` workdir); `launch/table.py` runs the ones without results through the sweep's
job runner (`jobs.py`) and writes `table.json` / `table.md`: per row, condition and metric the
mean ± sample std over seeds with n, derived columns, and the spec's orderings paired by seed.
Details: docs/compare.md#tables.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from typing import Callable, Sequence

import numpy as np

from mmer_jax import compare
from mmer_jax import paired
from mmer_jax import writers


@dataclasses.dataclass(frozen=True)
class Row:
  """One row. `overrides`: `--config.x=v` after the spec's, `{run:ROW}` in one replaced by ROW's
  run directory of the same seed (this row then runs after ROW); `config`: another config file;
  `results_of`: (row, stage) whose results this row reads (nothing trained); `link`: {stage:
  row}, stages of another row's run linked into this one before it trains; `same_as`: the run of
  another row (e.g. the depth row at the default depth); `mode`: main's `--mode`; `link_root`:
  the table workdir whose runs `link` names (default: this table's; another table's runs are
  read as they are, never run)."""
  overrides: Sequence[str] = ()
  config: str | None = None
  results_of: tuple[str, str] | None = None
  link: dict[str, str] = dataclasses.field(default_factory=dict)
  same_as: str | None = None
  mode: str = 'train'
  link_root: str | None = None


@dataclasses.dataclass(frozen=True)
class Ordering:
  """A paper's claim `better` > `worse` on `metric` at `condition`, paired by seed."""
  better: str
  worse: str
  metric: str
  condition: str
  claim: str = ''


@dataclasses.dataclass(frozen=True)
class Spec:
  """A table: `conditions` and `metrics` shown; `derived`: {name: conditions} averaged per run
  into a column of that name; `lower_is_better`: metrics where less is better (orderings);
  `analysis`: table.json's `analysis`, `analysis_markdown`: its text at the end of table.md."""
  name: str
  config: str
  rows: dict[str, Row]
  seeds: Sequence[int] = (0, 1, 2)
  overrides: Sequence[str] = ()
  conditions: Sequence[str] = ('full',)
  metrics: Sequence[str] = ('wa', 'ua')
  derived: dict[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  orderings: Sequence[Ordering] = ()
  lower_is_better: Sequence[str] = ('mae',)
  analysis: Callable[..., dict] | None = None  # (workdir, spec, table) -> extra JSON
  analysis_markdown: Callable[[dict], str] | None = None  # analysis -> text after the table


RUN_PLACEHOLDER = re.compile(r'\{run:([^{}]+)\}')  # `{run:ROW}` in a row's override


def run_dir(workdir: str, spec: Spec, row: str, seed: int) -> str:
  """The run a row reads for a seed (`same_as` followed)."""
  name = spec.rows[row].same_as or row
  return os.path.join(workdir, name, f'seed={seed}')


def results_path(workdir: str, spec: Spec, row: str, seed: int) -> str:
  r = spec.rows[row]
  if r.results_of:
    source, stage = r.results_of
    return os.path.join(run_dir(workdir, spec, source, seed), stage, 'results.json')
  return os.path.join(run_dir(workdir, spec, row, seed), 'results.json')


def fill_runs(override: str, workdir: str, spec: Spec, seed: int) -> str:
  """`override` with each `{run:ROW}` replaced by ROW's run directory for `seed`."""
  return RUN_PLACEHOLDER.sub(lambda m: run_dir(workdir, spec, m.group(1), seed), override)


def command(workdir: str, spec: Spec, row: str, seed: int, extra: Sequence[str] = (),
            python: str = sys.executable) -> list[str] | None:
  """The `mmer_jax.main` command of one row and seed, None for a row that trains nothing."""
  r = spec.rows[row]
  if r.results_of or r.same_as:
    return None
  return [python, '-m', 'mmer_jax.main', f'--config={r.config or spec.config}',
          f'--workdir={run_dir(workdir, spec, row, seed)}', f'--config.seed={seed}',
          *([f'--mode={r.mode}'] if r.mode != 'train' else []), *spec.overrides, *extra,
          *(fill_runs(o, workdir, spec, seed) for o in r.overrides)]


def prepare_links(workdir: str, spec: Spec, row: str, seed: int) -> None:
  """Links the stages a row reuses (`Row.link`, from `Row.link_root`) into its run directory."""
  r = spec.rows[row]
  for stage, source in r.link.items():
    target = os.path.join(run_dir(workdir, spec, row, seed), stage)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not os.path.lexists(target):
      os.symlink(os.path.abspath(os.path.join(run_dir(r.link_root or workdir, spec, source, seed),
                                              stage)), target)


def _needs(r: Row) -> list[str]:
  """The rows of this table whose runs a row reads, links or names in an override."""
  return [*(r.link.values() if r.link_root is None else ()),
          *([r.results_of[0]] if r.results_of else []), *([r.same_as] if r.same_as else []),
          *(name for o in r.overrides for name in RUN_PLACEHOLDER.findall(o))]


def depth(spec: Spec, row: str) -> int:
  """0 for a row that needs no other row's run, else one more than the deepest it needs."""
  needs = _needs(spec.rows[row])
  return 1 + max(depth(spec, n) for n in needs) if needs else 0


def with_needs(spec: Spec, rows: Sequence[str]) -> list[str]:
  """`rows` and every row they need, in the spec's order."""
  wanted = set()

  def add(row):
    if row not in wanted:
      wanted.add(row)
      for n in _needs(spec.rows[row]):
        add(n)
  for row in rows:
    add(row)
  return [r for r in spec.rows if r in wanted]


def pending(workdir: str, spec: Spec, rows: Sequence[str], seeds: Sequence[int],
            extra: Sequence[str] = (), python: str = sys.executable) -> list[list[list[str]]]:
  """The commands of the runs without results, in waves by `depth`: a wave's runs need only
  earlier waves' runs, so each wave may run side by side. Links are made here."""
  waves: dict[int, list[list[str]]] = {}
  for row in with_needs(spec, rows):
    for seed in seeds:
      cmd = command(workdir, spec, row, seed, extra, python)
      if cmd is None or os.path.exists(results_path(workdir, spec, row, seed)):
        continue
      prepare_links(workdir, spec, row, seed)
      waves.setdefault(depth(spec, row), []).append(cmd)
  return [waves[k] for k in sorted(waves)]


def load_row(workdir: str, spec: Spec, row: str, seeds: Sequence[int]) -> dict[int, dict]:
  """{seed: results.json} of the row's runs that have results."""
  out = {}
  for seed in seeds:
    path = results_path(workdir, spec, row, seed)
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        out[seed] = json.load(f)
  return out


def run_values(results: dict, spec: Spec) -> dict[str, dict[str, float]]:
  """{condition or derived column: {metric: value}} of one run."""
  rows = {r['condition']: r['metrics'] for r in results['rows']}
  out = {c: {m: float(rows[c][m]) for m in spec.metrics if m in rows.get(c, {})}
         for c in spec.conditions if c in rows}
  for name, conditions in spec.derived.items():
    if all(c in rows for c in conditions):
      out[name] = {m: float(np.mean([rows[c][m] for c in conditions])) for m in spec.metrics}
  return out


def aggregate(workdir: str, spec: Spec, rows: Sequence[str], seeds: Sequence[int]) -> dict:
  """table.json: per row the seeds it has, per column and metric `compare.summarize` over them
  (mean, sample std, n, values in seed order), and the orderings paired by seed."""
  columns = [*spec.conditions, *spec.derived]
  values = {row: {seed: run_values(res, spec) for seed, res in load_row(workdir, spec, row,
                                                                           seeds).items()}
            for row in rows}
  table = {'name': spec.name, 'config': spec.config, 'overrides': list(spec.overrides),
           'seeds': list(seeds), 'columns': columns, 'metrics': list(spec.metrics), 'rows': {}}
  for row in rows:
    per_seed = values[row]
    table['rows'][row] = {
        'seeds': sorted(per_seed),
        'cells': {c: {m: compare.summarize(v[c][m] for v in per_seed.values())
                      for m in spec.metrics if any(c in v and m in v[c] for v in per_seed.values())}
                  for c in columns if any(c in v for v in per_seed.values())}}
  table['orderings'] = []
  for o in spec.orderings:
    if o.better not in values or o.worse not in values:
      continue
    common = sorted(set(values[o.better]) & set(values[o.worse]))
    if not common:
      continue
    sign = -1.0 if o.metric in spec.lower_is_better else 1.0
    diff = [sign * (values[o.better][s][o.condition][o.metric] -
                    values[o.worse][s][o.condition][o.metric]) for s in common]
    table['orderings'].append({'better': o.better, 'worse': o.worse, 'metric': o.metric,
                               'condition': o.condition, 'claim': o.claim, 'seeds': common,
                               **paired.paired_difference(diff)})
  return table


def markdown(table: dict, spec: Spec | None = None) -> str:
  """table.md: per metric a rows x columns table (mean ± sample std, n), the orderings, then
  the spec's `analysis_markdown` of `table['analysis']` (when both are there)."""
  lines = [f"# {table['name']}", '', f"`{table['config']}`"
           + (' ' + ' '.join(table['overrides']) if table['overrides'] else '')
           + f"; seeds {','.join(map(str, table['seeds']))}; mean ± sample std over seeds (n).", '']
  for m in table['metrics']:
    lines += [f'**{m}**', '', '| row | n | ' + ' | '.join(table['columns']) + ' |',
              '|---|---|' + '---|' * len(table['columns'])]
    for row, entry in table['rows'].items():
      cells = [compare.format_cell(entry['cells'].get(c, {}).get(m), len(entry['seeds']))
               for c in table['columns']]
      lines.append(f"| {row} | {len(entry['seeds'])} | " + ' | '.join(cells) + ' |')
    lines.append('')
  if table['orderings']:
    lines += ['**Orderings** (better - worse per seed; sign so that > 0 holds)', '',
              '| claim | better > worse | metric @ column | mean ± std | held | t (crit) |',
              '|---|---|---|---|---|---|']
    for o in table['orderings']:
      std = '' if o['std_diff'] is None else f" ± {o['std_diff']:.4f}"
      t = '' if o['t'] is None else f"{o['t']:.2f} ({o['t_critical']})"
      lines.append(f"| {o['claim']} | {o['better']} > {o['worse']} | {o['metric']} @ "
                   f"{o['condition']} | {o['mean_diff']:+.4f}{std} | "
                   f"{o['seeds_held']}/{o['num_seeds']} | {t} |")
    lines.append('')
  if spec is not None and spec.analysis_markdown is not None and table.get('analysis'):
    lines += [spec.analysis_markdown(table['analysis']).rstrip('\n'), '']
  return '\n'.join(lines)


def write(workdir: str, table: dict, spec: Spec | None = None) -> None:
  os.makedirs(workdir, exist_ok=True)
  writers.write_atomic(os.path.join(workdir, 'table.json'), json.dumps(table, indent=1))
  writers.write_atomic(os.path.join(workdir, 'table.md'), markdown(table, spec))


def load_spec(path: str, arg: str | None = None) -> Spec:
  """`spec(arg)` of a spec file (launch/tables/<name>.py)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  module_spec = importlib.util.spec_from_file_location('table_spec', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.spec(arg) if arg is not None else module.spec()
