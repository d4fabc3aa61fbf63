"""Ranks the XLA ops of a `jax.profiler` trace by time: where a compiled step spends it.

  python -m mmer_jax.benchmark --config=configs/mmin_iemocap.py:synthetic --profile_dir=/tmp/prof
  python benchmarks/profile_summary.py /tmp/prof --top 15

Reads the `perfetto_trace.json.gz` that `jax.profiler.trace(create_perfetto_trace=True)` writes
(the newest one under the directory) and prints one JSON object:

  xla_busy_ms       summed self time of every XLA op on the executor threads
  while_ms          inclusive time of the `while` ops (on CPU: the LSTM scans, one per encoder
                    and direction of differentiation), and their share of xla_busy_ms
  by_kind           self time per op kind (the HLO name without its `.N` suffix: fusion kinds,
                    `convolution`, `while`, `copy`, ...), largest first
  top_ops           the single ops with the largest inclusive time

Self time is an op's duration minus that of the ops nested inside it on the same thread (ops
inside a while body are nested in the while's event).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re

_SUFFIX = re.compile(r'\.\d+$')
# Executor-thread bookkeeping events: not ops of the program.
_BOOKKEEPING = ('ThunkExecutor', 'ThreadpoolListener', '$')


def load_events(profile_dir: str) -> list[dict]:
  traces = sorted(pathlib.Path(profile_dir).rglob('perfetto_trace.json.gz'),
                  key=lambda p: p.stat().st_mtime)
  if not traces:
    raise SystemExit(f'{profile_dir}: no perfetto_trace.json.gz (run the benchmark with '
                     '--profile_dir)')
  with gzip.open(traces[-1], 'rt', encoding='utf-8') as f:
    data = json.load(f)
  return data['traceEvents'] if isinstance(data, dict) else data


def xla_op_events(events: list[dict]) -> list[dict]:
  """Complete ('X') events on XLA executor threads that name HLO ops."""
  threads = {(e['pid'], e['tid']): e.get('args', {}).get('name', '')
             for e in events if e.get('ph') == 'M' and e.get('name') == 'thread_name'}
  return [e for e in events
          if e.get('ph') == 'X' and 'XLA' in threads.get((e['pid'], e['tid']), '')
          and not e['name'].startswith(_BOOKKEEPING)]


def self_times(ops: list[dict]) -> list[tuple[dict, float]]:
  """(event, self time in us) with nested events' time subtracted, per thread."""
  out = []
  by_thread = collections.defaultdict(list)
  for e in ops:
    by_thread[(e['pid'], e['tid'])].append(e)
  for thread_ops in by_thread.values():
    thread_ops.sort(key=lambda e: (e['ts'], -e.get('dur', 0)))
    stack: list[list] = []  # [event, end, child time]
    def close(entry):
      event, _, child = entry
      out.append((event, max(event.get('dur', 0.0) - child, 0.0)))
      if stack:
        stack[-1][2] += event.get('dur', 0.0)
    for e in thread_ops:
      while stack and e['ts'] >= stack[-1][1]:
        close(stack.pop())
      stack.append([e, e['ts'] + e.get('dur', 0.0), 0.0])
    while stack:
      close(stack.pop())
  return out


def summarize(events: list[dict], top: int = 15) -> dict:
  ops = xla_op_events(events)
  timed = self_times(ops)
  busy = sum(t for _, t in timed)
  by_kind = collections.Counter()
  for e, t in timed:
    by_kind[_SUFFIX.sub('', e['name'])] += t
  inclusive = collections.Counter()
  for e in ops:
    inclusive[e['name']] += e.get('dur', 0.0)
  while_us = sum(e.get('dur', 0.0) for e in ops if _SUFFIX.sub('', e['name']) == 'while')
  ms = lambda us: round(us / 1000.0, 3)
  return {
      'xla_busy_ms': ms(busy),
      'while_ms': ms(while_us),
      'while_share': round(while_us / busy, 4) if busy else 0.0,
      'by_kind': [{'kind': k, 'self_ms': ms(v), 'share': round(v / busy, 4)}
                  for k, v in by_kind.most_common(top)],
      'top_ops': [{'op': k, 'ms': ms(v)} for k, v in inclusive.most_common(top)],
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('profile_dir')
  parser.add_argument('--top', type=int, default=15)
  args = parser.parse_args()
  print(json.dumps(summarize(load_events(args.profile_dir), args.top)))


if __name__ == '__main__':
  main()
