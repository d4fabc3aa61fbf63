"""Shared pieces of the side-by-side benchmarks: timing calls, running a reporter, writing results."""

import json
import os
import statistics
import subprocess
import sys
import time


def time_calls(fn, steps: int, sync=None) -> dict:
  """Median, min and max seconds of `steps` calls of `fn` after one untimed call (allocator and
  first-call costs). `sync` (e.g. `torch.cuda.synchronize`) is called after each call, inside
  the timed span, so that work queued on an accelerator is counted."""
  sync = sync or (lambda: None)
  fn()
  sync()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - start)
  return {'median': statistics.median(times), 'min': min(times), 'max': max(times), 'steps': steps}


def json_line(cmd, cwd) -> dict:
  """Runs `cmd` (echoed to stderr) and parses the JSON on its last line of stdout."""
  print('$', ' '.join(cmd), file=sys.stderr, flush=True)
  out = subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def torch_device(torch, name: str):
  """(torch.device, its sync function, a description) for `--device` (cpu | cuda)."""
  device = torch.device(name)
  if device.type == 'cuda':
    if not torch.cuda.is_available():
      raise SystemExit('--device=cuda: torch sees no CUDA device')
    return device, torch.cuda.synchronize, {
        'device': name, 'device_name': torch.cuda.get_device_name(device),
        'allow_tf32_matmul': torch.backends.cuda.matmul.allow_tf32,
        'allow_tf32_cudnn': torch.backends.cudnn.allow_tf32}
  return device, None, {'device': name}


def write_report(out: str, report: dict, markdown: str) -> None:
  """`<out>.json` (the raw report) and `<out>.md` (its table); prints the table."""
  os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
  with open(f'{out}.json', 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1)
  with open(f'{out}.md', 'w', encoding='utf-8') as f:
    f.write(markdown)
  print(markdown)
