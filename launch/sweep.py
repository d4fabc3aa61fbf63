"""Runs a config's sweep: vmapped groups as one compiled program each, the rest as separate jobs.

  python launch/sweep.py --config=configs/fusion_iemocap.py:synthetic --workdir=runs/sweep_fusion
  python launch/sweep.py --config=configs/fusion_iemocap.py:synthetic --workdir=runs/sweep_fusion --print
  python launch/sweep.py --config=configs/fusion_iemocap.py:synthetic --workdir=runs/sweep_fusion --group=0
  python launch/sweep.py --config=configs/mmgcn_iemocap.py:synthetic --workdir=runs/sweep_mmgcn \\
      --jobs_at_once=4 --devices_per_job=2        # 8 GPUs: four jobs side by side, 2 GPUs each

The config file's `sweep()` returns override dicts (`{dotted field: value}`); `mmer_jax/sweep.py`
splits them into groups: members that differ only in the seed, the learning rate, the training
missing rate or float fields of `method` train together, vmapped and sharded over the devices
(`sweep` x `batch` mesh); every structural difference (depth, modalities, method, a staged
config) is a job of its own.

Jobs, each in its own directory under `--workdir`:
  a group of several members  `python launch/sweep.py ... --group=K` -> <workdir>/<group>/
                              (members' run directories, sweep.json, sweep.md)
  a single member             `python -m mmer_jax.main --config=... --config.<field>=<value>`
                              -> <workdir>/<member>/ (a plain run)
Without `--print` the jobs run here, one after another or `--jobs_at_once` side by side, each
seeing its own `--devices_per_job` GPUs (CUDA_VISIBLE_DEVICES); a job whose results exist is
skipped. Then `<workdir>/sweep.json` / `sweep.md` gather every member (the table per group:
members of a group share their structure). `--config.<field>=<value>` flags change the base config
of every member, as with `mmer_jax.main`.
"""

import importlib.util
import json
import os
import shlex
import sys

sys.path.insert(0, os.getcwd())  # the config files import `configs.default` from the repository

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from mmer_jax import jobs
from mmer_jax import rng
from mmer_jax import sweep

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file with a sweep() (file.py[:variant]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the jobs and the sweep table go.')
_PRINT = flags.DEFINE_bool('print', False, 'Print one command per job instead of running them.')
_GROUP = flags.DEFINE_integer('group', None, 'Run only this group (what a printed command does).')
_SEPARATE = flags.DEFINE_list('separate', [], 'Fields that make separate jobs although vmappable '
                              '(e.g. a method float that the method reads in Python).')
_JOBS = flags.DEFINE_integer('jobs_at_once', 1, 'Jobs run side by side (local devices split).')
_DEVICES = flags.DEFINE_integer('devices_per_job', 0, 'GPUs per job (CUDA_VISIBLE_DEVICES); 0: all.')
flags.mark_flags_as_required(['config', 'workdir'])


def _config_module(path: str):
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _base_args() -> list[str]:
  """The --config and --config.x flags of this command, passed on to every job."""
  return [a for a in sys.argv[1:] if a.startswith('--config')]


def _flag(field: str, value) -> str:
  text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
  return f'--config.{field}={text}'


def job_command(index: int, group: sweep.Group, workdir: str, python: str = 'python') -> list[str]:
  """The command of group `index` (run from the repository's root): a vmapped group through this
  script, one member through main."""
  if group.vmapped:
    return [python, 'launch/sweep.py', *_base_args(), f'--workdir={workdir}',
            f'--group={index}', *[f'--separate={f}' for f in _SEPARATE.value]]
  member = group.members[0]
  return [python, '-m', 'mmer_jax.main', *_base_args(),
          *[_flag(k, v) for k, v in member.items()],
          f'--workdir={os.path.join(workdir, sweep.member_name(member))}']


def group_dir(workdir: str, group: sweep.Group, groups: list) -> str:
  """A vmapped group's directory: the workdir itself when it is the only job, else named by the
  overrides its members share."""
  return workdir if len(groups) == 1 else os.path.join(workdir, sweep.member_name(group.fixed))


def _done(workdir: str, group: sweep.Group, groups: list) -> bool:
  if group.vmapped:
    return os.path.exists(os.path.join(group_dir(workdir, group, groups), 'sweep.json'))
  return os.path.exists(os.path.join(workdir, sweep.member_name(group.members[0]), 'results.json'))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  rng.configure(config)  # before any key is made (a vmapped group runs in this process)
  path = config_flags.get_config_filename(flags.FLAGS['config']).partition(':')[0]
  members = sweep.load_sweep(_config_module(path))
  groups = sweep.split_groups(config, members, separate=_SEPARATE.value)
  workdir = _WORKDIR.value
  if _GROUP.value is not None:
    group = groups[_GROUP.value]
    sweep.run_group(config, group.members, group_dir(workdir, group, groups))
    return
  commands = [job_command(k, g, workdir, 'python' if _PRINT.value else sys.executable)
              for k, g in enumerate(groups)]
  if _PRINT.value:
    for command in commands:
      print(shlex.join(command))
    return
  jobs.run([c for c, g in zip(commands, groups) if not _done(workdir, g, groups)],
           jobs_at_once=_JOBS.value, devices_per_job=_DEVICES.value)
  table = sweep.gather(workdir, [(group_dir(workdir, g, groups) if g.vmapped else None, g)
                                for g in groups])
  print(f'wrote {os.path.join(workdir, "sweep.md")} ({table["num_members"]} members, '
        f'{len(groups)} jobs)')


if __name__ == '__main__':
  app.run(main)
