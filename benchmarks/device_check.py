"""A ready GPU check: every method's train and inference step, float32 and bfloat16, one JSON line each.

  bash benchmarks/device_check.sh                              # on a lent GPU machine (docs/device_check.md)
  bash benchmarks/device_check.sh --authors_dir=.whl/authors   # + the authors' PyTorch code, side by side
  JAX_PLATFORMS=cpu python benchmarks/device_check.py --rehearse   # the same path on a CPU, tiny

Meant for one call of the `device` tool (15 minutes of device time per task in all): it runs in
at most about 8 minutes on one H100 (`--budget_s`, default 450 s, counted from the wrapper's
start), each case in its own process under a timeout (`--case_timeout`), so that one hang or
crash costs one case. Steps:

  env      a probe process prints the Python, JAX, jaxlib and CUDA plugin versions, the backend
           and its devices, and where the packages came from (the machine or the carried
           wheels). With `--expect_gpu` (the default, except with `--rehearse`) the check stops
           here, exit code 3, unless JAX's backend is 'gpu'.
  warm     (on a GPU machine; `--warm_jobs`) every case's programs in each precision compiled
           in background processes (half the cores, at most 8 at a time, the costliest cases
           first, under `nice -n 10`) into one persistent XLA compilation cache, while the timed
           phase goes through the cheap cases; a timed case waits for its running warm
           compilations and loads its programs from the cache, or compiles them itself if its
           warm ones had not started. Compilation, not the steps, is what takes minutes (IMDer's
           train step: 100 to 200 s on a CPU), and the costliest cases are timed last.
  cases    (`CASES`; `--cases` picks) one worker process per case builds its config at the
           papers' batch size (the config's `data.batch_size`; inference on a batch of the same
           size), on a synthetic set shrunk to what the timed batches need, and for each
           precision (`--precisions`, default float32,bfloat16: `config.precision`) times the
           compiled train and eval steps with `mmer_jax.benchmark.benchmark` (`--steps` timed
           after `--warmup` untimed; a state donated and threaded through, one batch placed
           once) and lowers the train step once more for XLA's FLOP count (cost analysis of the
           lowered HLO; achieved GFLOP/s = FLOPs / median step time).
  authors  with `--authors_repo_{mmin,mmgcn,imder}` (or `--authors_dir` holding mmin/, mmgcn/,
           imder/; benchmarks/device_wheels.sh copies them into .whl/authors), right after each
           of our cases: benchmarks/authors_{mmin,mmgcn,imder}_step.py on the same batch
           (MMGCN: dialogues of exactly our batch's turns; IMDer: one modality missing, their
           100-step sampler) on `--authors_device` (cuda where JAX sees a GPU), then a ratio line
           per precision: authors' seconds / ours (above 1: ours is faster).

Output: every JSON line goes to stdout and to `<out>/device_check.jsonl`, the workers' logs to
`<out>/device_check.log` and a table to `<out>/device_check.md`, where <out> is $OUT when set
(the device tool brings back what is under it) or `--out` (default runs/device_check). Each line
has `kind`: env | warm | ours | authors | ratio | error | skipped | summary (docs/device_check.md
lists the fields). Progress goes to stderr. Exit code 0 when every case ran (a failed warm
compilation only costs time), 1 otherwise.

`--rehearse` runs the same path on the `:smoke` variants (tiny models and batches, the MMGCN
stacks 2 and 8 layers deep, the authors' IMDer sampler 4 steps), 2 timed steps, no GPU expected,
a longer budget: everything but the numbers, on a CPU (docs/device_check.md; add `--warm_jobs=2`
to rehearse the warm phase too).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import copy
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # mmer_jax and configs/, installed or not

# name: config, dotted overrides, the authors' script that times the same step, what `--rehearse`
# changes besides the `:smoke` variant, and a relative compile cost (the warm phase starts the
# costliest first). Timed in this order, so that a budget cut loses the least.
CASES = {
    'fusion_iemocap': {'config': 'configs/fusion_iemocap.py'},
    'mmin_iemocap': {'config': 'configs/mmin_iemocap.py', 'authors': 'mmin', 'cost': 2},
    # Both depths in the authors' layer form ([A h, h0] W, their variant=True), as their code and
    # benchmarks/mmgcn_side_by_side.py: 4 is the paper's best depth, 64 what their code builds.
    'mmgcn_iemocap_d4': {'config': 'configs/mmgcn_iemocap.py', 'authors': 'mmgcn',
                         'overrides': {'method.num_layers': 4, 'method.gcn_form': 'authors'},
                         'rehearse': {'method.num_layers': 2}},
    'mmgcn_iemocap_d64': {'config': 'configs/mmgcn_iemocap.py', 'authors': 'mmgcn', 'cost': 2,
                          'overrides': {'method.num_layers': 64, 'method.gcn_form': 'authors'},
                          'rehearse': {'method.num_layers': 8}},
    'm3er_iemocap': {'config': 'configs/m3er_iemocap.py'},
    'bclstm_iemocap': {'config': 'configs/bclstm_iemocap.py'},
    # One modality missing (recovered by the 100-step Euler-Maruyama sampler, in training and
    # inference, as the authors' code), the authors' num_modal=2. The costliest to compile (on
    # a CPU, 150 s for the train step): last, so that a budget cut loses only them.
    'imder_mosi': {'config': 'configs/imder_mosi.py', 'authors': 'imder', 'cost': 5,
                   'overrides': {'train.missing': 'drop_one'}},
    'imder_mosei': {'config': 'configs/imder_mosei.py', 'authors': 'imder', 'cost': 5,
                    'overrides': {'train.missing': 'drop_one'}},
}
PRECISIONS = ('float32', 'bfloat16')
REHEARSE_AUTHORS_SAMPLER_STEPS = 4  # the authors' IMDer sampler under --rehearse (theirs: 100)
AUTHORS_IMDER_CASE = 'drop_one'

# The fields of `mmer_jax.benchmark.benchmark`'s report that an `ours` line keeps.
REPORT_FIELDS = ('method', 'dataset', 'level', 'backend', 'device_kind', 'devices', 'batch_size',
                 'eval_batch_size', 'examples_per_step', 'eval_examples_per_step', 'compile_s',
                 'eval_compile_s', 'step_s_median', 'step_s_min', 'step_s_max', 'examples_per_s',
                 'eval_step_s_median', 'eval_step_s_min', 'eval_step_s_max',
                 'eval_examples_per_s', 'eval_missing', 'timed_compiles', 'peak_rss_mb', 'setup_s',
                 'steps', 'warmup', 'dialogue_turns', 'eval_dialogue_turns')


# -- the worker: one case, every precision, in its own process ----------------------------------


def load_config(path: str, variant: str, overrides: dict):
  """`configs/<name>.py` with `variant`, dotted `overrides` set."""
  module = importlib.import_module('configs.' + pathlib.Path(path).stem)
  config = module.get_config(variant)
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def shrink(config, smoke: bool) -> None:
  """Inference on a batch of the training batch's size; an utterance-level synthetic set only as
  large as the timed batches need (4 training batches; the full MOSEI stand-in is 2.5 GB). A
  conversation set keeps its sizes: a training batch of dialogues is drawn from all of them."""
  from mmer_jax.data import synthetic_generator  # pylint: disable=g-import-not-at-top
  batch = int(config.data.batch_size)
  config.data.eval_batch_size = batch
  release = synthetic_generator.RELEASES[config.data.name.split('/')[-1]]
  if not smoke and release.kind == 'utterance':
    config.data.options.sizes = {'train': 4 * batch, 'valid': batch, 'test': batch}


def train_step_flops(run, state) -> float | None:
  """XLA's FLOP count of the train step for `state`, from the lowered (not compiled) HLO: cheap."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmer_jax import benchmark  # pylint: disable=g-import-not-at-top
  batch = run.place(next(iter(run.train_batches(0))))
  step = getattr(run.train_step, '__wrapped__', run.train_step)
  with jax.set_mesh(run.mesh):
    return benchmark.cost_flops(step.lower(run.to_devices(state), batch).cost_analysis())


def worker(spec: dict) -> int:
  """Times one case in each precision; prints one JSON line per precision on stdout."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmer_jax import benchmark  # pylint: disable=g-import-not-at-top
  from mmer_jax import stages  # pylint: disable=g-import-not-at-top
  from mmer_jax import train  # pylint: disable=g-import-not-at-top

  case = CASES[spec['case']]
  overrides = dict(case.get('overrides', {}))
  if spec['rehearse']:
    overrides.update(case.get('rehearse', {}))
  variant = 'smoke' if spec['rehearse'] else 'synthetic'
  config = load_config(case['config'], variant, overrides)
  shrink(config, spec['rehearse'])
  config.data.data_dir = spec['data_dir']
  config = stages.main_stage(config)
  failed, dataset = 0, None
  for precision in spec['precisions']:
    start = time.perf_counter()
    line = {'kind': 'ours', 'case': spec['case'], 'config': f'{case["config"]}:{variant}',
            'overrides': overrides, 'precision': precision}
    try:
      c = copy.deepcopy(config)
      c.precision = precision
      with contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON lines alone
        run = train.Run(c, dataset=dataset)
        dataset = run.dataset
        state, flops, flops_error = run.init_state(), None, None
        if not spec.get('warm'):
          try:  # before the timed steps, which donate the state
            flops = train_step_flops(run, state)
          except Exception as e:  # pylint: disable=broad-except
            flops_error = f'{type(e).__name__}: {e}'
        report = benchmark.benchmark(c, steps=spec['steps'], warmup=spec['warmup'], run=run,
                                     state=state)
        del state
      line.update({k: report[k] for k in REPORT_FIELDS if k in report})
      line['train_gflop'] = None if flops is None else flops / 1e9
      line['train_gflops_per_s'] = None if flops is None else flops / report['step_s_median'] / 1e9
      if flops_error:
        line['flops_error'] = flops_error[:300]
      line.update({'jax': jax.__version__, 'wall_s': time.perf_counter() - start})
      if spec.get('warm'):  # compiled into the persistent cache; nothing measured
        line = {'kind': 'warm', 'case': spec['case'], 'precision': precision,
                **{k: line.get(k) for k in ('compile_s', 'eval_compile_s', 'setup_s', 'wall_s')}}
      del run
    except Exception as e:  # pylint: disable=broad-except
      import traceback  # pylint: disable=g-import-not-at-top
      traceback.print_exc()
      failed += 1
      line.update({'kind': 'error', 'error': f'{type(e).__name__}: {e}'[:1000],
                   'wall_s': time.perf_counter() - start})
    print(json.dumps(line), flush=True)
  return 1 if failed else 0


def probe(expect_gpu: bool) -> int:
  """The `env` line: versions, backend, devices, where packages come from."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  line = {'kind': 'env', 'python': platform.python_version(), 'executable': sys.executable,
          'host': platform.node(), 'cpu_count': os.cpu_count()}
  versions, origins = {}, {}
  for dist, module in (('jax', 'jax'), ('jaxlib', 'jaxlib'), ('jax-cuda13-plugin', None),
                       ('jax-cuda12-plugin', None), ('flax', 'flax'), ('optax', 'optax'),
                       ('orbax-checkpoint', 'orbax.checkpoint'), ('numpy', 'numpy'),
                       ('tensorflow-datasets', 'tensorflow_datasets'), ('jraph', 'jraph'),
                       ('ml-collections', 'ml_collections'), ('array-record', 'array_record'),
                       ('tensorboardX', 'tensorboardX'), ('protobuf', 'google.protobuf'),
                       ('tensorflow-metadata', 'tensorflow_metadata'), ('torch', None)):
    try:
      versions[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      continue
    if module:
      try:
        path = importlib.import_module(module).__file__  # .../<site>/<package>/__init__.py
        origins[dist] = str(pathlib.Path(path).parents[len(module.split('.'))])
      except Exception as e:  # pylint: disable=broad-except
        origins[dist] = f'import failed: {type(e).__name__}: {e}'[:300]
  line.update({'versions': versions, 'origins': origins})
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  line.update({'backend': jax.default_backend(), 'devices': [str(d) for d in devices],
               'device_kind': devices[0].device_kind, 'device_count': len(devices),
               'default_matmul_precision': jax.config.jax_default_matmul_precision,
               'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS')})
  try:
    smi = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                          '--format=csv,noheader'], capture_output=True, text=True, timeout=30)
    line['nvidia_smi'] = smi.stdout.strip() or smi.stderr.strip()[:300]
  except (OSError, subprocess.SubprocessError):
    line['nvidia_smi'] = None
  line['gpu_ok'] = jax.default_backend() == 'gpu'
  line['expect_gpu'] = expect_gpu
  print(json.dumps(line), flush=True)
  return 3 if expect_gpu and not line['gpu_ok'] else 0


# -- the authors' side ---------------------------------------------------------------------------


def authors_command(kind: str, repo: str, ours: dict, opts) -> list[str]:
  """The authors' step benchmark of the same step as our `ours` line."""
  common = [f'--authors_repo={repo}', f'--steps={opts.authors_steps}',
            f'--device={opts.authors_device}']
  script = str(ROOT / 'benchmarks' / f'authors_{kind}_step.py')
  if kind == 'mmin':
    return [opts.python, script, *common, f'--batch={ours["batch_size"]}']
  if kind == 'mmgcn':
    depth = ours['overrides']['method.num_layers']
    return [opts.python, script, *common, f'--depths={depth}',
            f'--turns={",".join(map(str, ours["dialogue_turns"]))}',
            f'--eval_turns={",".join(map(str, ours["eval_dialogue_turns"]))}']
  if kind == 'imder':
    dataset = 'mosei' if 'mosei' in ours['dataset'] else 'mosi'
    extra = [f'--num_steps={REHEARSE_AUTHORS_SAMPLER_STEPS}'] if opts.rehearse else []
    return [opts.python, script, *common, f'--dataset={dataset}', f'--batch={ours["batch_size"]}',
            f'--cases={AUTHORS_IMDER_CASE}', '--modes=train,infer', *extra]
  raise ValueError(kind)


def authors_times(kind: str, report: dict, ours: dict) -> tuple[float, float]:
  """(train, inference) median seconds of the authors' report."""
  if kind == 'mmin':
    return report['step_s_median'], report['eval_step_s_median']
  if kind == 'mmgcn':
    depth = ours['overrides']['method.num_layers']
    return report[f'train_depth{depth}']['median'], report[f'infer_depth{depth}']['median']
  return (report[f'train_{AUTHORS_IMDER_CASE}']['median'],
          report[f'infer_{AUTHORS_IMDER_CASE}']['median'])


# -- the driver ----------------------------------------------------------------------------------


class Check:
  """Runs the sub-processes under the budget; writes every line to stdout and the files."""

  def __init__(self, opts):
    self.opts = opts
    self.t0 = float(os.environ.get('DEVICE_CHECK_T0') or time.time())
    self.out = os.environ.get('OUT') or opts.out
    os.makedirs(self.out, exist_ok=True)
    self.jsonl = open(os.path.join(self.out, 'device_check.jsonl'), 'a', encoding='utf-8')
    self.log = open(os.path.join(self.out, 'device_check.log'), 'a', encoding='utf-8')
    self.lock = threading.Lock()
    self.lines: list[dict] = []
    self.live: set = set()  # warm processes running now
    self.stopping = False
    # One persistent XLA compilation cache for every process of the check (the warm phase
    # fills it). A size limit turns on JAX's file lock for parallel writers, which needs the
    # filelock package (the GPU machines have it); without it, no limit: an entry read while
    # another process writes it only costs a recompilation (JAX warns and compiles).
    self.env = dict(os.environ)
    if opts.cache_dir:
      self.env['JAX_COMPILATION_CACHE_DIR'] = opts.cache_dir
    self.env.setdefault('JAX_COMPILATION_CACHE_DIR', '/tmp/mmer_device_check_xla_cache')
    self.env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    if importlib.util.find_spec('filelock') is not None:
      self.env.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(16 << 30))
    elif self.env.get('JAX_COMPILATION_CACHE_MAX_SIZE', '-1') != '-1':
      self.env['JAX_COMPILATION_CACHE_MAX_SIZE'] = '-1'  # JAX refuses a limit without filelock

  def elapsed(self) -> float:
    return time.time() - self.t0

  def remaining(self) -> float:
    return self.opts.budget_s - self.elapsed()

  def emit(self, line: dict) -> None:
    with self.lock:
      line = {**line, 't_s': round(self.elapsed(), 1)}
      text = json.dumps(line)
      print(text, flush=True)
      self.jsonl.write(text + '\n')
      self.jsonl.flush()
      self.lines.append(line)

  def say(self, msg: str) -> None:
    msg = f'[{self.elapsed():6.1f}s] {msg}'
    with self.lock:
      print(msg, file=sys.stderr, flush=True)
      self._log(msg + '\n')

  def _log(self, text: str) -> None:
    self.log.write(text)
    self.log.flush()

  def run(self, name: str, cmd: list[str], timeout: float, on_line=None,
          env: dict | None = None, background: bool = False) -> tuple[int | None, list[dict], str]:
    """Runs `cmd`; returns (exit code or None on timeout, its JSON lines, its stderr's tail). Its
    stderr goes to the log, each line prefixed with `name`; each JSON line on its stdout is
    passed to `on_line` as it comes. A `background` process runs under `nice -n 10` (timed
    processes, at normal priority, come first for the cores) and is counted in `self.live`."""
    with self.lock:
      self._log(f'===== {name}: {" ".join(cmd)}\n')
    if background:
      cmd = ['nice', '-n', '10', *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env or self.env)
    if background:
      with self.lock:
        self.live.add(proc)
    tail = collections.deque(maxlen=40)

    def drain():
      for text in proc.stderr:
        tail.append(text)
        with self.lock:
          self._log(f'{name}| {text}')

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    killed = []

    def kill():
      killed.append(True)
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    lines: list[dict] = []
    try:
      for text in proc.stdout:
        text = text.strip()
        try:
          line = json.loads(text) if text.startswith('{') else None
        except json.JSONDecodeError:
          line = None
        if line is None:
          tail.append(text + '\n')
          continue
        lines.append(line)
        if on_line:
          on_line(line, tail)
      rc = proc.wait()
    finally:
      timer.cancel()
      with self.lock:
        self.live.discard(proc)
    reader.join(timeout=10)
    return (None if killed else rc), lines, ''.join(tail)[-2000:]

  def env_line(self) -> dict | None:
    cmd = [self.opts.python, __file__, '--_probe', f'--expect_gpu={int(self.opts.expect_gpu)}']
    rc, lines, tail = self.run('env', cmd, timeout=min(120, max(self.remaining(), 10)))
    env = lines[0] if lines else {'kind': 'env', 'error': tail, 'rc': rc}
    if rc != 0 and lines:
      env['stderr_tail'] = tail  # e.g. why JAX fell back to the CPU
    self.emit(env)
    if rc != 0:
      why = ('no GPU: JAX backend is ' + str(env.get('backend')) if rc == 3 else
             f'the probe failed (rc={rc})')
      self.say(f'STOP: {why}; see the env line' + ('' if rc == 3 else f':\n{tail}'))
      return None
    self.say(f'env: python {env["python"]}, jax {env["versions"].get("jax")}, backend '
             f'{env["backend"]}, {env["device_count"]} x {env["device_kind"]}')
    return env

  def spec(self, name: str, precisions: list[str], warm: bool = False) -> dict:
    """A worker's task. Its data directory is the case's and its first precision's: a warm
    process of each precision builds its own (no two processes build the same set), and the
    timed run of the case reuses its first one's."""
    return {'case': name, 'precisions': precisions, 'rehearse': self.opts.rehearse,
            'steps': 1 if warm else self.opts.steps, 'warmup': 0 if warm else self.opts.warmup,
            'warm': warm, 'data_dir': os.path.join(self.opts.data_dir, f'{name}-{precisions[0]}')}

  def start_warm(self, names: list[str]):
    """Starts the warm phase: each case's programs in each precision compiled (and run once) in
    `--warm_jobs` background processes, the costliest cases first, into the persistent cache,
    while the timed phase goes through the cheap cases; a timed case then loads its programs
    instead of compiling them. Returns (pool, {(case, precision): future}, {(case, precision):
    warm or error line}), the lines filled in as the processes finish."""
    tasks = [(name, p) for name in sorted(names, key=lambda n: -CASES[n].get('cost', 1))
             for p in self.opts.precisions]
    jobs = min(self.opts.warm_jobs, len(tasks))
    if jobs <= 0:
      return None, {}, {}
    self.say(f'warm phase: {len(tasks)} compilations in the background, {jobs} at a time')
    env = {**self.env, 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}  # one GPU, several processes
    warm: dict = {}

    def one(task):
      name, precision = task
      timeout = self.remaining() - self.opts.min_case_s
      if self.stopping or timeout < self.opts.min_case_s:
        return

      def on_line(line, tail):
        if line.get('kind') == 'error':
          line['stderr_tail'] = ''.join(tail)[-2000:]
        line['phase'] = 'warm'
        self.emit(line)
        warm[(name, line.get('precision'))] = line

      rc, _, tail = self.run(f'{name}:{precision}:warm',
                             [self.opts.python, __file__, '--_worker',
                              json.dumps(self.spec(name, [precision], warm=True))],
                             timeout, on_line, env, background=True)
      if rc != 0 and (name, precision) not in warm:
        self.emit({'kind': 'error', 'case': name, 'precision': precision, 'phase': 'warm',
                   'rc': rc, 'timed_out': rc is None, 'stderr_tail': tail})
      line = warm.get((name, precision), {})
      self.say(f'  warm {name} {precision}: ' + (
          f'compiled in {line["compile_s"]:.1f} s + eval {line["eval_compile_s"]:.1f} s'
          if line.get('kind') == 'warm' else 'timed out' if rc is None else f'exit {rc}'))

    pool = concurrent.futures.ThreadPoolExecutor(jobs)
    futures = {task: pool.submit(one, task) for task in tasks}
    return pool, futures, warm

  def await_warm(self, name: str, futures: dict) -> None:
    """Before `name` is timed: its warm compilations that have not started are dropped (the
    timed process compiles them itself), those running are waited for."""
    pending = [f for (case, _), f in futures.items() if case == name and not f.cancel()]
    if pending and not all(f.done() for f in pending):
      self.say(f'{name}: waiting for its warm compilations')
    for f in pending:
      f.result()

  def stop_warm(self, pool) -> None:
    """Ends the warm phase: queued compilations dropped, running ones killed."""
    if pool is None:
      return
    self.stopping = True
    pool.shutdown(wait=False, cancel_futures=True)
    with self.lock:
      live = list(self.live)
    for proc in live:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    pool.shutdown(wait=True)

  def case(self, name: str, warm: dict) -> list[dict]:
    """Our lines for `name`, emitted; error / skipped lines for what did not run."""
    if self.remaining() < self.opts.min_case_s:
      self.emit({'kind': 'skipped', 'case': name, 'why': f'budget: {self.remaining():.0f} s left'})
      return []
    timeout = min(self.opts.case_timeout, self.remaining())
    with self.lock:
      alongside = len(self.live)
    self.say(f'{name}: {", ".join(self.opts.precisions)} (timeout {timeout:.0f} s'
             + (f'; {alongside} warm compilations running alongside, niced' if alongside else '')
             + ')')
    start = time.time()
    ours = []

    def on_line(line, tail):
      if line.get('kind') == 'error':
        line['stderr_tail'] = ''.join(tail)[-2000:]
      if line.get('kind') == 'ours':
        w = warm.get((name, line['precision']), {})
        line['compile_cached'] = w.get('kind') == 'warm'
        line['warm_compile_s'] = w.get('compile_s')
        line['warm_eval_compile_s'] = w.get('eval_compile_s')
        with self.lock:  # at the start, or now if more: the warm processes start in a burst
          line['compiles_alongside'] = max(alongside, len(self.live))
      self.emit(line)
      if line.get('kind') == 'ours':
        ours.append(line)
        self.say(f'  {name} {line["precision"]}: compile {line["compile_s"]:.1f} s'
                 + (f' (cached; {line["warm_compile_s"]:.1f} s in the warm phase)'
                    if line['compile_cached'] else '')
                 + f', train {1e3 * line["step_s_median"]:.2f} ms, infer '
                 f'{1e3 * line["eval_step_s_median"]:.2f} ms, {line["examples_per_s"]:.0f} ex/s'
                 + (f', {line["train_gflops_per_s"]:.0f} GFLOP/s' if line.get('train_gflops_per_s') else ''))

    rc, lines, tail = self.run(name, [self.opts.python, __file__, '--_worker',
                                      json.dumps(self.spec(name, self.opts.precisions))],
                               timeout, on_line)
    done = {line.get('precision') for line in lines}
    for precision in self.opts.precisions:
      if precision not in done:
        self.emit({'kind': 'error', 'case': name, 'precision': precision, 'rc': rc,
                   'timed_out': rc is None, 'error': ('timed out' if rc is None else f'exit {rc}')
                   + f' after {time.time() - start:.0f} s', 'stderr_tail': tail})
    return ours

  def authors(self, name: str, ours: list[dict]) -> None:
    kind = CASES[name].get('authors')
    repo = kind and self.opts.authors_repos.get(kind)
    if not repo or not ours:
      return
    if self.remaining() < self.opts.min_case_s:
      self.emit({'kind': 'skipped', 'case': name, 'side': 'authors',
                 'why': f'budget: {self.remaining():.0f} s left'})
      return
    cmd = authors_command(kind, repo, ours[0], self.opts)
    timeout = min(self.opts.authors_timeout, self.remaining())
    with self.lock:
      alongside = len(self.live)
    self.say(f'{name}: the authors\' {kind} on {self.opts.authors_device} (timeout {timeout:.0f} s)')
    rc, lines, tail = self.run(f'{name}:authors', cmd, timeout)
    if rc != 0 or not lines:
      self.emit({'kind': 'error', 'case': name, 'side': 'authors', 'rc': rc, 'timed_out': rc is None,
                 'command': cmd, 'stderr_tail': tail})
      return
    report = lines[-1]
    train_s, infer_s = authors_times(kind, report, ours[0])
    self.emit({'kind': 'authors', 'case': name, 'authors': kind, 'device': self.opts.authors_device,
               'train_s_median': train_s, 'infer_s_median': infer_s,
               'compiles_alongside': alongside, 'report': report})
    for line in ours:
      self.emit({'kind': 'ratio', 'case': name, 'precision': line['precision'],
                 'device_kind': line['device_kind'], 'authors_device': self.opts.authors_device,
                 'authors_device_name': report.get('device_name', report.get('device')),
                 'ours_train_s': line['step_s_median'], 'authors_train_s': train_s,
                 'train_ratio': train_s / line['step_s_median'],
                 'ours_infer_s': line['eval_step_s_median'], 'authors_infer_s': infer_s,
                 'infer_ratio': infer_s / line['eval_step_s_median']})
      self.say(f'  {name} {line["precision"]}: authors / ours train '
               f'{train_s / line["step_s_median"]:.2f}x, infer {infer_s / line["eval_step_s_median"]:.2f}x')

  def table(self) -> str:
    ratios = {(l['case'], l['precision']): l for l in self.lines if l['kind'] == 'ratio'}
    rows = ['| case | precision | device | batch | compile s | train ms | infer ms | train ex/s | '
            'GFLOP/s | authors train ms | ratio | authors infer ms | ratio |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    fmt = lambda x, f='{:.2f}': '' if x is None else f.format(x)  # noqa: E731
    for l in self.lines:
      if l['kind'] != 'ours':
        continue
      r = ratios.get((l['case'], l['precision']), {})
      compile_s = l.get('warm_compile_s') if l.get('compile_cached') else l['compile_s']
      rows.append(' | '.join([
          f'| {l["case"]}', l['precision'], l['device_kind'], str(l['batch_size']),
          fmt(compile_s, '{:.1f}'), fmt(1e3 * l['step_s_median']),
          fmt(1e3 * l['eval_step_s_median']), fmt(l['examples_per_s'], '{:.0f}'),
          fmt(l.get('train_gflops_per_s'), '{:.0f}'),
          fmt(1e3 * r['authors_train_s'] if r else None), fmt(r.get('train_ratio'), '{:.2f}x'),
          fmt(1e3 * r['authors_infer_s'] if r else None), fmt(r.get('infer_ratio'), '{:.2f}x')]) + ' |')
    return '\n'.join(rows) + '\n'

  def main(self) -> int:
    self.say(f'device check: cases {", ".join(self.opts.cases)}; budget {self.opts.budget_s:.0f} s; '
             f'out {self.out}')
    env = self.env_line()
    if env is None:
      return 3
    if self.opts.authors_device == 'auto':
      self.opts.authors_device = 'cuda' if env.get('backend') == 'gpu' else 'cpu'
    if self.opts.warm_jobs is None:  # parallel compilation pays on a GPU machine's many cores
      self.opts.warm_jobs = min(8, (env.get('cpu_count') or 2) // 2) if env.get('backend') == 'gpu' else 0
    pool, futures, warm = self.start_warm(self.opts.cases)
    try:
      for name in self.opts.cases:
        self.await_warm(name, futures)
        ours = self.case(name, warm)
        self.authors(name, ours)
    finally:
      self.stop_warm(pool)
    counts = collections.Counter(l['kind'] for l in self.lines)
    failed = sum(l['kind'] in ('error', 'skipped') and l.get('phase') != 'warm' for l in self.lines)
    self.emit({'kind': 'summary', 'ok': failed == 0, 'counts': dict(counts), 'wall_s': self.elapsed(),
               'budget_s': self.opts.budget_s, 'rehearse': self.opts.rehearse,
               'steps': self.opts.steps, 'warmup': self.opts.warmup,
               'warm_jobs': self.opts.warm_jobs})
    table = self.table()
    with open(os.path.join(self.out, 'device_check.md'), 'w', encoding='utf-8') as f:
      f.write(table)
    print(table, file=sys.stderr, flush=True)
    self.say(f'done in {self.elapsed():.0f} s: {dict(counts)}')
    return 0 if failed == 0 else 1


def parse(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cases', default=','.join(CASES), help=f'comma-separated, of {", ".join(CASES)}')
  parser.add_argument('--precisions', default=','.join(PRECISIONS))
  parser.add_argument('--steps', type=int, default=None, help='timed steps (default 10; --quick 3; --rehearse 2)')
  parser.add_argument('--warmup', type=int, default=None, help='untimed steps after the compiling one (default 2)')
  parser.add_argument('--quick', action='store_true', help='3 timed steps after 1 untimed')
  parser.add_argument('--rehearse', action='store_true',
                      help='the :smoke variants, 2 steps, no GPU expected (a CPU rehearsal)')
  parser.add_argument('--expect_gpu', type=int, default=None, choices=(0, 1),
                      help='stop unless JAX sees a GPU (default 1; 0 with --rehearse)')
  parser.add_argument('--budget_s', type=float, default=None,
                      help='wall-clock budget from the start (the wrapper\'s, DEVICE_CHECK_T0); '
                           'default 450, 2400 with --rehearse')
  parser.add_argument('--case_timeout', type=float, default=None,
                      help='seconds per process: a case (both precisions) or a warm compilation '
                           '(default 240; 900 with --rehearse)')
  parser.add_argument('--authors_timeout', type=float, default=120.0)
  parser.add_argument('--min_case_s', type=float, default=20.0,
                      help='skip a case when less than this is left of the budget')
  parser.add_argument('--authors_dir', default=None,
                      help='a folder holding the authors\' checkouts as mmin/, mmgcn/, imder/')
  for kind in ('mmin', 'mmgcn', 'imder'):
    parser.add_argument(f'--authors_repo_{kind}', default=None)
  parser.add_argument('--authors_steps', type=int, default=None,
                      help='timed calls of the authors\' scripts (default: --steps, at most 5)')
  parser.add_argument('--authors_device', default='auto', help='cuda | cpu | auto (cuda where JAX has a GPU)')
  parser.add_argument('--warm_jobs', type=int, default=None,
                      help='parallel processes of the warm phase (default: half the cores, at most '
                           '8, on a GPU; 0, no warm phase, on a CPU)')
  parser.add_argument('--cache_dir', default=None,
                      help='the persistent XLA cache (default $JAX_COMPILATION_CACHE_DIR or '
                           '/tmp/mmer_device_check_xla_cache)')
  parser.add_argument('--out', default='runs/device_check', help='used when $OUT is not set')
  parser.add_argument('--data_dir', default='/tmp/mmer_device_check_tfds', help='where the synthetic sets are built')
  parser.add_argument('--python', default=sys.executable, help='the interpreter of the workers and the authors\' scripts')
  parser.add_argument('--_worker', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--_probe', action='store_true', help=argparse.SUPPRESS)
  opts = parser.parse_args(argv)
  opts.cases = [c for c in opts.cases.split(',') if c]
  unknown = [c for c in opts.cases if c not in CASES]
  if unknown:
    parser.error(f'unknown cases {unknown}; known: {", ".join(CASES)}')
  opts.precisions = [p for p in opts.precisions.split(',') if p]
  default_steps, default_warmup = (2, 1) if opts.rehearse else (3, 1) if opts.quick else (10, 2)
  opts.steps = default_steps if opts.steps is None else opts.steps
  opts.warmup = default_warmup if opts.warmup is None else opts.warmup
  opts.authors_steps = min(opts.steps, 5) if opts.authors_steps is None else opts.authors_steps
  opts.budget_s = (2400.0 if opts.rehearse else 450.0) if opts.budget_s is None else opts.budget_s
  opts.case_timeout = ((900.0 if opts.rehearse else 240.0) if opts.case_timeout is None
                       else opts.case_timeout)
  opts.expect_gpu = (not opts.rehearse) if opts.expect_gpu is None else bool(opts.expect_gpu)
  opts.authors_repos = {}
  for kind in ('mmin', 'mmgcn', 'imder'):
    repo = getattr(opts, f'authors_repo_{kind}')
    if repo is None and opts.authors_dir and os.path.isdir(os.path.join(opts.authors_dir, kind)):
      repo = os.path.join(opts.authors_dir, kind)
    if repo:
      opts.authors_repos[kind] = os.path.abspath(repo)
  return opts


def main(argv=None) -> int:
  opts = parse(argv)
  if opts._worker:  # pylint: disable=protected-access
    return worker(json.loads(opts._worker))  # pylint: disable=protected-access
  if opts._probe:  # pylint: disable=protected-access
    return probe(opts.expect_gpu)
  return Check(opts).main()


if __name__ == '__main__':
  sys.exit(main())
