"""Vmapped sweeps: members of one config that differ only in numeric hyperparameters train as ONE
compiled program (docs/sweeps.md).

  python launch/sweep.py --config=configs/fusion_iemocap.py:synthetic --workdir=runs/sweep_fusion

A config's `sweep()` returns override dicts; members differing only in vmapped fields (`seed`,
`optimizer.learning_rate`, `train.missing_rate`, float `method.` fields) form a group whose
stacked state trains under one `jax.vmap`ped step, sharded over a `sweep` x `batch` mesh, through
the one training loop (`loop.py`, `SweepDriver`), so each member's results equal its separate
run's. Anything structural makes separate groups, which `launch/sweep.py` runs as jobs. A
group's directory holds one run directory per member, the stacked latest state and
`sweep.json` / `sweep.md` (means over members by `compare.summarize`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from typing import Any, Callable, Iterable, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmer_jax import checkpoint
from mmer_jax import compare
from mmer_jax import evaluate
from mmer_jax import loop
from mmer_jax import methods
from mmer_jax import metrics as metrics_lib
from mmer_jax import optim
from mmer_jax import parallel
from mmer_jax import stages as stages_lib
from mmer_jax import steps
from mmer_jax import train
from mmer_jax import workdir_lock
from mmer_jax import writers

SWEEP_AXIS = 'sweep'
# Fields a group's members may differ in besides float fields under `method.`.
VMAPPED_FIELDS = ('seed', 'optimizer.learning_rate', 'train.missing_rate')


# -- overrides and groups -----------------------------------------------------------------------

def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  node = config
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise KeyError(f'sweep override {field!r}: the config has no field {field!r}')
    node = node[part]
  return node


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with `{dotted field: value}` set (type-checked by ml_collections, like
  `--config.field=value`); an unknown field is an error naming it."""
  config = copy.deepcopy(config)
  with config.unlocked():
    for field, value in overrides.items():
      _get(config, field)  # exists
      parent, _, leaf = field.rpartition('.')
      node = _get(config, parent) if parent else config
      try:
        node[leaf] = value
      except TypeError as e:
        raise TypeError(f'sweep override {field}={value!r}: {e}') from e
  return config


def is_vmapped(config: ml_collections.ConfigDict, field: str, value: Any) -> bool:
  """Whether members may differ in `field` inside one compiled group (see the module doc).

  A dialogue-level method's batches are padded to the length bucket of the dialogues they hold
  (and MMGCN's graphs to their edge budget), so members with their own data order (seed) see
  batches of different shapes at the same step: for those methods the seed makes separate jobs.
  Training masks drawn on the host (`train.mask_draw`) are data, not part of the compiled step:
  members that differ in the seed or the missing rate draw different patterns (under
  'host_grouped', batches of different shapes and counts), so those too are separate jobs."""
  if field in ('seed', 'train.missing_rate'):  # the only fields whose answer needs the resolved config
    resolved = stages_lib.resolve(config)
    if any(c.train.get('mask_draw', 'step') != 'step' for c in [resolved, *resolved.stages.values()]):
      return False
    if field == 'seed':
      return methods.get_method_class(resolved.method.name).level == 'utterance'
  if field in VMAPPED_FIELDS:
    return True
  if not field.startswith('method.') or field.endswith('.name') or field == 'method.variant':
    return False
  current = _get(config, field)
  return (isinstance(value, float) and not isinstance(value, bool)
          and isinstance(current, float) and not isinstance(current, bool))


@dataclasses.dataclass
class Group:
  """Members compiled together: the overrides they share (`fixed`) and each member's own."""
  fixed: dict
  members: list[dict]

  @property
  def vmapped(self) -> bool:
    return len(self.members) > 1


def member_name(overrides: dict) -> str:
  """A directory name for a member: its overrides as `field=value` joined by ','."""
  if not overrides:
    return 'base'
  text = ','.join(f'{k}={v}' for k, v in overrides.items())
  return re.sub(r'[^A-Za-z0-9_.,=+-]', '_', text)


def split_groups(config: ml_collections.ConfigDict, members: Sequence[dict],
                 separate: Iterable[str] = ()) -> list[Group]:
  """Groups the members of a sweep: members differing only in vmapped fields share a group.

  `separate` names fields to treat as structural anyway (e.g. a `method.` float the method reads
  in Python)."""
  separate = set(separate)
  groups: dict[str, Group] = {}
  for i, overrides in enumerate(members):
    if not isinstance(overrides, dict):
      raise TypeError(f'sweep(): member {i} must be a dict of overrides, got {overrides!r}')
    member = apply_overrides(config, overrides)
    fixed = {k: v for k, v in overrides.items() if k in separate or not is_vmapped(member, k, v)}
    key = json.dumps(fixed, sort_keys=True, default=str)
    groups.setdefault(key, Group(fixed=fixed, members=[])).members.append(dict(overrides))
  return list(groups.values())


def load_sweep(config_module) -> list[dict]:
  """The override dicts of a config file's `sweep()` (a module without one has no sweep)."""
  fn = getattr(config_module, 'sweep', None)
  if fn is None:
    raise ValueError(f'{config_module.__file__}: no sweep() defined; add `def sweep(): return '
                     "[{'seed': 0}, {'seed': 1}, ...]`")
  members = list(fn())
  if not members:
    raise ValueError(f'{config_module.__file__}: sweep() returned no members')
  return members


# -- the traced member config -------------------------------------------------------------------

def traced_fields(group_members: Sequence[dict]) -> tuple[str, ...]:
  """The fields whose per-member values enter the compiled step (all vmapped fields but `seed`,
  which only acts on the host)."""
  fields = {k for m in group_members for k in m if k != 'seed'}
  return tuple(sorted(fields))


def member_config(config: ml_collections.ConfigDict, hyper: dict) -> ml_collections.ConfigDict:
  """`config` with the traced fields set to `hyper`'s values (tracers inside the step).

  ml_collections type-checks overrides, so the config is rebuilt from its dict with the values
  in place (a fresh ConfigDict accepts any value); it is locked like the run's own."""
  if not hyper:
    return config
  tree = config.to_dict()
  for field, value in hyper.items():
    node = tree
    *parents, leaf = field.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  out = ml_collections.ConfigDict(tree)
  out.lock()
  return out


def create_sweep_mesh(num_members: int, devices=None) -> Mesh:
  """A 2-D mesh `sweep` x `batch` over the devices: the members split over as many devices as
  divide both their number and the device count, each member's batch over the rest."""
  devices = jax.devices() if devices is None else list(devices)
  sweep = math.gcd(num_members, len(devices))
  return Mesh(np.asarray(devices).reshape(sweep, len(devices) // sweep), (SWEEP_AXIS, parallel.AXIS))


def stack(trees: Sequence[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


class SweepRun:
  """The members of one group: their Runs (data, method, init), the stacked state, and the
  vmapped compiled steps."""

  def __init__(self, configs: Sequence[ml_collections.ConfigDict], member_dirs: Sequence[str],
               workdir: str, *, fields: Sequence[str], devices=None):
    """`configs`: each member's resolved single-stage config (they differ in vmapped fields
    only); `member_dirs`: where each member's run goes; `workdir`: the group's own directory
    (the stacked latest state); `fields`: the traced fields (`traced_fields`)."""
    if any(c.stages for c in configs):
      raise ValueError('SweepRun trains one stage; train_group runs a staged config stage by stage')
    if configs[0].parallel != 'jit':
      raise ValueError(f"a vmapped sweep runs with parallel='jit', got {configs[0].parallel!r}")
    self.configs, self.member_dirs, self.workdir = list(configs), list(member_dirs), workdir
    self.names = [os.path.relpath(d, workdir) for d in member_dirs]
    self.fields = tuple(fields)
    self.mesh = create_sweep_mesh(len(configs), devices)
    first = train.Run(self.configs[0], devices=self.mesh.devices[0], workdir=member_dirs[0])
    self.runs = [first] + [train.Run(c, devices=self.mesh.devices[0], dataset=first.dataset,
                                     workdir=d)
                           for c, d in zip(self.configs[1:], member_dirs[1:])]
    self.spec, self.template = first.spec, first
    # Per member [S] arrays of the traced fields.
    self.hyper = {f: np.asarray([float(_get(c, f)) for c in self.configs], np.float32)
                  for f in self.fields}
    self._tx = None  # the stacked state's (static) optimiser: set by init_states / abstract_states
    self._compile()

  def member_dir(self, i: int) -> str:
    return self.member_dirs[i]

  @property
  def size(self) -> int:
    return len(self.configs)

  # -- the member's method and optimiser, built inside the trace --------------------------------

  def _member(self, hyper: dict):
    config = member_config(self.configs[0], hyper)
    return config, methods.create_method(config, self.spec)

  def _compile(self):
    template = self.template
    missing_mode = self.configs[0].train.missing

    def train_one(state, batch, hyper):
      config, method = self._member(hyper)
      tx = optim.create_optimizer(config.optimizer, template.steps_per_epoch,
                                  config.train.num_epochs, method.trainable_mask(state.params))
      rate = steps.training_rate(config)
      state, metrics = steps.train_step(state.replace(tx=tx), batch, method=method,
                                        missing_mode=missing_mode, rate=rate)
      return state.replace(tx=self._tx), metrics

    def predict_one(params, batch, rng, hyper):
      _, method = self._member(hyper)
      return method.predict(params, batch, rng)

    mesh = self.mesh
    members = NamedSharding(mesh, P(SWEEP_AXIS))
    batches = NamedSharding(mesh, P(SWEEP_AXIS, parallel.AXIS))
    shared = NamedSharding(mesh, P(parallel.AXIS))
    self._train = jax.jit(jax.vmap(train_one), donate_argnums=(0,))
    self._predict_all = jax.jit(jax.vmap(predict_one, in_axes=(0, None, 0, 0)))
    self._predict_one = jax.jit(predict_one)
    self._members_sharding, self._batch_sharding, self._shared_sharding = members, batches, shared

  # -- state ------------------------------------------------------------------------------------

  def init_states(self):
    """Each member's fresh state (its own seed and config), stacked on the sweep axis."""
    states = [run.init_state() for run in self.runs]
    self._tx = states[0].tx
    return stack([s.replace(tx=self._tx) for s in states])

  def abstract_states(self, params_shapes):
    state = self.runs[0].abstract_state(params_shapes)
    self._tx = state.tx
    return stack([state] * self.size)

  def place_states(self, states):
    return jax.device_put(states, self._members_sharding)

  def train_step(self, states, member_batches: Sequence[dict]):
    batch = jax.device_put(stack(member_batches), self._batch_sharding)
    hyper = jax.device_put(self.hyper, self._members_sharding)
    with jax.set_mesh(self.mesh):
      return self._train(states, batch, hyper)

  def predict_all(self, params, batch: dict) -> np.ndarray:
    """[S, B, ...] outputs of every member on one host batch (validation: the same for all)."""
    rngs = np.stack([np.asarray(run.predict_rng) for run in self.runs])
    with jax.set_mesh(self.mesh):
      return np.asarray(self._predict_all(params, jax.device_put(batch, self._shared_sharding),
                                          jax.device_put(rngs, self._members_sharding),
                                          jax.device_put(self.hyper, self._members_sharding)))

  def member_predict(self, i: int) -> Callable:
    """`predict(params, batch)` of member i alone (compiled once for all members)."""
    hyper = {f: v[i] for f, v in self.hyper.items()}
    rng = self.runs[i].predict_rng
    return lambda params, batch: np.asarray(self._predict_one(params, batch, rng, hyper))


def validation_metrics(sweep_run: SweepRun, params) -> list[tuple[dict, tuple]]:
  """Each member's validation metrics (and the pooled outputs, labels, mask they came from),
  pooled over the run's validation conditions. Every eval batch is predicted once for all
  members: the member axis is moved behind the example axes, so `evaluate.pooled_outputs`
  flattens it like one output of shape [S, ...] per example."""
  def predict(params, batch):
    out = sweep_run.predict_all(params, batch)
    return np.moveaxis(out, 0, np.ndim(batch['example_mask']))
  outputs, labels, mask = evaluate.pooled_outputs(
      sweep_run.spec, predict, params, sweep_run.template.eval_batches('valid'),
      sweep_run.template.valid_conditions)
  task = sweep_run.spec.task
  return [(metrics_lib.compute(task, outputs[:, i], labels, mask), (outputs[:, i], labels, mask))
          for i in range(sweep_run.size)]


def train_group(config: ml_collections.ConfigDict, members: Sequence[dict], workdir: str, *,
                devices=None) -> list[dict | None]:
  """Trains one group of members, stage by stage, each stage as one vmapped program; returns each
  member's results (None for a member that diverged: its `diverged.json` says why; a member
  that diverged in a stage is stopped from the start in the stages after it).

  Member i runs in `<workdir>/<member_name>/` exactly as `train.train_and_evaluate` would lay it
  out (a staged config: one directory per stage, the final table copied up); finished stages
  are skipped and an interrupted one resumes from the group's stacked checkpoint."""
  names = [member_name(m) for m in members]
  if len(set(names)) != len(names):
    raise ValueError(f'sweep members must differ; got the same overrides twice: {names}')
  groups = split_groups(config, members)
  if len(groups) > 1:
    raise ValueError('these members cannot share one compiled program (they differ in '
                     f'{sorted({k for g in groups for k in g.fixed})}); launch/sweep.py runs them '
                     'as separate groups')
  configs = [stages_lib.resolve(apply_overrides(config, m)) for m in members]
  dirs = [os.path.join(workdir, n) for n in names]
  plans = [stages_lib.plan(c, d) for c, d in zip(configs, dirs)]
  for c, d in zip(configs, dirs):
    train.write_config(c, d)
  staged = len(plans[0]) > 1
  results = None
  for k, stage in enumerate(plans[0]):
    stage_dirs = [p[k].workdir for p in plans]
    if staged and all(stages_lib.is_finished(d) for d in stage_dirs):
      logging.info('stage %s: finished for every member, skipped', stage.name)
      continue
    if staged:
      for p in plans:
        train.write_config(p[k].config, p[k].workdir)
    sweep_run = SweepRun([p[k].config for p in plans], stage_dirs,
                         os.path.join(workdir, stage.name) if staged else workdir,
                         fields=traced_fields(members), devices=devices)
    results = _train_stage(sweep_run, [_diverged_in(p[:k]) for p in plans])
  if staged:
    for d, p in zip(dirs, plans):
      if stages_lib.is_finished(p[-1].workdir):  # not a member that diverged
        train.publish_final_results(p, d)
      elif _diverged_in(p):
        loop.write_diverged(d, loop.Member(diverged=_diverged_in(p)))
  if results is None:  # every stage had finished
    results = [_load_results(d) for d in dirs]
  return results


def _diverged_in(stages: Sequence[stages_lib.Stage]) -> str | None:
  """The message of the first of a member's `stages` that diverged, if any."""
  return next((m for m in (loop.read_diverged(s.workdir) for s in stages) if m), None)


def _load_results(workdir: str) -> dict | None:
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


class SweepDriver:
  """The loop's driver (`loop.Driver`) for a group's S members: the vmapped step, one validation
  pass for all, each member's best checkpoint in its own directory, the stacked latest state in
  the group's."""

  def __init__(self, sweep_run: SweepRun, latest_mgr):
    self.sweep_run, self.latest_mgr = sweep_run, latest_mgr
    template = sweep_run.template
    self.config, self.spec, self.num_steps = sweep_run.configs[0], sweep_run.spec, template.num_steps
    self.names, self.member_dirs = sweep_run.names, sweep_run.member_dirs
    self.valid_conditions = template.valid_conditions
    self.epoch_position, self.epochs_done = template.epoch_position, template.epochs_done
    self.is_epoch_end = template.is_epoch_end
    self.best_mgrs = [checkpoint.create_managers(d)[1] for d in self.member_dirs]

  def describe(self) -> str:
    return f'a vmapped sweep of {self.sweep_run.size}, batch {self.config.data.batch_size} each'

  def batches(self, epoch, start):
    return zip(*[run.train_batches(epoch, start) for run in self.sweep_run.runs])

  def train_step(self, states, member_batches):
    states, metrics = self.sweep_run.train_step(states, member_batches)
    return states, {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}

  def validate(self, states):
    self._validated = jax.device_get(states.eval_params)  # one copy for every save_best after
    return validation_metrics(self.sweep_run, states.eval_params)

  def save_best(self, i, step, states, member):
    params = jax.tree_util.tree_map(lambda x: np.asarray(x[i]), self._validated)
    checkpoint.save(self.best_mgrs[i], step, {'params': params}, member.meta())

  def save_latest(self, step, states, members):
    checkpoint.save(self.latest_mgr, step, jax.device_get(states).checkpoint_items(),
                    {'members': [m.meta() for m in members]})


def _train_stage(sweep_run: SweepRun, diverged: Sequence[str | None]) -> list[dict | None]:
  """Trains one stage of a group as one vmapped program (`loop.train_members`), resuming from the
  group's stacked checkpoint; evaluates each member's selected checkpoint on the test grid.
  `diverged`: per member, an earlier stage's divergence (the member stays stopped)."""
  latest_mgr, _ = checkpoint.create_managers(sweep_run.workdir)
  saved = checkpoint.saved_params_shapes(latest_mgr)
  patience = sweep_run.configs[0].train.get('patience')
  if saved is None:
    states = sweep_run.init_states()
    members = [loop.Member(stopped=bool(d), diverged=d) for d in diverged]
  else:
    member_shapes = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), saved)
    target = sweep_run.abstract_states(member_shapes)
    items, meta = checkpoint.restore(latest_mgr, target.checkpoint_items())
    states = target.restore_items(items)
    members = [loop.Member.from_meta(m, patience) for m in meta['members']]
    logging.info('sweep resumed from step %d', int(states.step[0]))
  driver = SweepDriver(sweep_run, latest_mgr)
  step = int(np.asarray(states.step)[0])
  metric_writers = [writers.MetricWriter(d) for d in sweep_run.member_dirs]
  progress = writers.Progress(driver.num_steps, step, every_steps=driver.config.train.log_every_steps,
                              every_s=driver.config.train.get('log_every_seconds'),
                              name=f'sweep of {sweep_run.size}', first_step=loop.FIRST_STEP).start()
  try:
    try:
      loop.train_members(driver, sweep_run.place_states(states), step, members,
                         progress=progress, metric_writers=metric_writers)
    finally:
      for w in metric_writers:
        w.close()
    return _evaluate_members(sweep_run, driver.best_mgrs, members, progress)
  finally:
    progress.close()


def _evaluate_members(sweep_run: SweepRun, best_mgrs, members, progress) -> list[dict | None]:
  """Each member's selected checkpoint on the test grid (`train.evaluate_stage`), with the
  group's compiled predict; None for a member that diverged (`diverged.json` says why) or has
  no selected checkpoint."""
  results = []
  for i, run in enumerate(sweep_run.runs):
    member = members[i]
    if member.diverged or member.best_step is None:
      if member.diverged:
        loop.write_diverged(sweep_run.member_dir(i), member)
      logging.warning('member %s has no results: %s', sweep_run.names[i],
                      member.diverged or 'no selected checkpoint')
      results.append(None)
      continue
    progress.activity(f'member {sweep_run.names[i]} ({i + 1}/{sweep_run.size}): the test grid')
    results.append(train.evaluate_stage(run, sweep_run.member_dir(i), best_mgr=best_mgrs[i],
                                        warnings=member.warnings, progress=progress,
                                        predict=sweep_run.member_predict(i)))
  return results


# -- the sweep's table --------------------------------------------------------------------------

def _mean_std(values: Sequence[dict], keys) -> tuple[dict, dict]:
  """Per key, the mean and sample std (`compare.summarize`; 0 for one value) of the dicts with it."""
  summaries = {k: compare.summarize(v[k] for v in values if k in v) for k in keys
               if any(k in v for v in values)}
  return ({k: s['mean'] for k, s in summaries.items()},
          {k: s['std'] or 0.0 for k, s in summaries.items()})


def _grid(results: Sequence[dict], names: Sequence[str]) -> list[dict]:
  """Rows by condition (the union, in order of appearance): each member's metrics, and their
  mean and std (ddof=1, the sample std; 0 for one member) over the members that have the row."""
  conditions = list(dict.fromkeys(row['condition'] for r in results for row in r['rows']))
  rows = []
  for condition in conditions:
    per_member = {n: row['metrics'] for n, r in zip(names, results) for row in r['rows']
                  if row['condition'] == condition}
    keys = list(dict.fromkeys(k for m in per_member.values() for k in m))
    mean, std = _mean_std(list(per_member.values()), keys)
    rows.append({'condition': condition, 'mean': mean, 'std': std, 'num_members': len(per_member),
                 'members': per_member})
  return rows


def summarize(names: Sequence[str], overrides: Sequence[dict], results: Sequence[dict | None],
              workdirs: Sequence[str] | None = None,
              diverged: Sequence[str | None] | None = None) -> dict:
  """sweep.json: every grid row with each member's metrics and their mean and std over all
  members, and `settings`: the same per setting (a member's overrides but the seed), i.e. mean
  and std over the seeds of each hyperparameter setting."""
  done = [(n, o, r) for n, o, r in zip(names, overrides, results) if r is not None]
  if not done:
    raise ValueError('no member of the sweep has results (each diverged or had no validation)')
  first = done[0][2]
  settings: dict[str, list] = {}
  for n, o, r in done:
    setting = {k: v for k, v in o.items() if k != 'seed'}
    settings.setdefault(json.dumps(setting, sort_keys=True, default=str), []).append((n, setting, r))
  return {'method': first['method'], 'dataset': first['dataset'], 'task': first['task'],
          'split': first['split'], 'num_members': len(done),
          'members': [{'name': n, 'workdir': w, 'overrides': o, 'has_results': r is not None,
                       **({'diverged': d} if d else {})}
                      for n, o, r, w, d in zip(names, overrides, results, workdirs or names,
                                               diverged or [None] * len(names))],
          'rows': _grid([r for _, _, r in done], [n for n, _, _ in done]),
          'settings': [{'overrides': group[0][1], 'members': [n for n, _, _ in group],
                        'rows': [{k: row[k] for k in ('condition', 'mean', 'std', 'num_members')}
                                 for row in _grid([r for _, _, r in group], [n for n, _, _ in group])]}
                       for group in settings.values()]}


def _mean_std_table(rows: Sequence[dict], cols) -> list[str]:
  lines = ['| condition | ' + ' | '.join(cols) + ' | n |', '|---|' + '---|' * (len(cols) + 1)]
  for row in rows:
    n = row['num_members']
    lines.append(f"| {row['condition']} | " + ' | '.join(
        compare.format_cell({'mean': row['mean'][c], 'std': row['std'][c] if n > 1 else None,
                             'n': n}, n) if c in row['mean'] else '' for c in cols) + f' | {n} |')
  return lines


def sweep_markdown(table: dict) -> str:
  """sweep.md: mean ± std per grid row and metric (over all members, then per setting when there
  are several), then each member's first metric per row."""
  cols = evaluate.columns(table['task'])
  lines = [f"# {table['method']} on {table['dataset']}: sweep of {table['num_members']} members "
           f"({table['split']}; mean ± sample std over members, n members)", '']
  lines += _mean_std_table(table['rows'], cols)
  if len(table['settings']) > 1:
    for setting in table['settings']:
      lines += ['', f"## {member_name(setting['overrides'])} (over seeds)", '']
      lines += _mean_std_table(setting['rows'], cols)
  failed = [m for m in table['members'] if m.get('diverged')]
  if failed:
    lines += ['', '## Diverged (no results)', ''] + [f"- {m['name']}: {m['diverged']}" for m in failed]
  main = cols[0]
  names = [m['name'] for m in table['members'] if m['has_results']]
  lines += ['', f'## {main} per member', '', '| condition | ' + ' | '.join(names) + ' |',
            '|---|' + '---|' * len(names)]
  for row in table['rows']:
    lines.append(f"| {row['condition']} | " + ' | '.join(
        f"{row['members'][n][main]:.4f}" if n in row['members'] else '' for n in names) + ' |')
  return '\n'.join(lines) + '\n'


def gather(workdir: str, jobs: Sequence[tuple[str | None, Group]]) -> dict:
  """The whole sweep's table over every job's members, written to `<workdir>/sweep.json|md`.

  `jobs`: (the group's directory, or None for a single member run in `<workdir>/<member>`, group).
  """
  names, overrides, results, workdirs, diverged = [], [], [], [], []
  for directory, group in jobs:
    for member in group.members:
      name = member_name(member)
      rel = os.path.relpath(os.path.join(directory, name) if directory else
                            os.path.join(workdir, name), workdir)
      path = os.path.join(workdir, rel, 'results.json')
      result = _load_results(os.path.dirname(path))
      diverged.append(loop.read_diverged(os.path.dirname(path)))
      names.append(rel)
      overrides.append(member)
      results.append(result)
      workdirs.append(rel)
  table = summarize(names, overrides, results, workdirs, diverged)
  write_table(workdir, table)
  return table


def write_table(workdir: str, table: dict) -> None:
  """Writes sweep.json and sweep.md atomically."""
  os.makedirs(workdir, exist_ok=True)
  for name, text in (('sweep.json', json.dumps(table, indent=2)), ('sweep.md', sweep_markdown(table))):
    writers.write_atomic(os.path.join(workdir, name), text)


def run_group(config: ml_collections.ConfigDict, members: Sequence[dict], workdir: str, *,
              devices=None) -> dict:
  """Trains and evaluates a group and writes its sweep.json / sweep.md; returns the table."""
  with workdir_lock.hold(workdir):
    results = train_group(config, members, workdir, devices=devices)
  names = [member_name(m) for m in members]
  table = summarize(names, members, results,
                    diverged=[loop.read_diverged(os.path.join(workdir, n)) for n in names])
  write_table(workdir, table)
  return table
