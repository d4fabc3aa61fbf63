#!/usr/bin/env bash
# The ready GPU check (docs/device_check.md): one command for a lent GPU machine (device tool).
#
#   bash benchmarks/device_check.sh [device_check.py options]       # e.g. --authors_dir=.whl/authors
#
# 1. Puts the repository on PYTHONPATH (mmer_jax and configs/, no install, no build step).
# 2. Probes the imports mmer_jax needs; if one fails, installs the carried wheels (.whl/*.whl,
#    from benchmarks/device_wheels.sh) without dependencies into $DEVICE_CHECK_SITE (default
#    /tmp/mmer_jax_site) and puts that first on PYTHONPATH; if the probe still fails, installs
#    .whl/fallback/ too (protobuf) and probes again. Stops with exit code 2 if imports still fail.
# 3. Runs benchmarks/device_check.py with the given options (its exit code: 0 all cases ran,
#    1 some failed or were skipped, 3 no GPU where one is expected).
#
# PYTHON chooses the interpreter (default python3: on the GPU machines the one holding PyTorch and
# JAX). What the wrapper prints also goes to $OUT/device_check_install.log when $OUT is set.
set -uo pipefail
export DEVICE_CHECK_T0=${DEVICE_CHECK_T0:-$(date +%s.%N)}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${DEVICE_CHECK_SITE:-/tmp/mmer_jax_site}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
log=/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && log="$OUT/device_check_install.log"; fi
say() { echo "[device_check.sh] $*" | tee -a "$log" >&2; }

probe() {  # the modules mmer_jax imports beyond the machine's, and tfds' generated protos
  "$PY" - <<'EOF' >>"$log" 2>&1
import jraph, ml_collections, tensorboardX, array_record, tensorflow_datasets
from tensorflow_metadata.proto.v0 import schema_pb2
import mmer_jax.train, mmer_jax.benchmark
EOF
}

install() {  # install DIR/*.whl into $SITE, no dependencies, no index
  say "installing $(ls "$1"/*.whl | wc -l) wheels from $1 into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --target "$SITE" "$1"/*.whl 2>&1 | tee -a "$log" >&2
  return "${PIPESTATUS[0]}"
}

start=$(date +%s.%N)
if probe; then
  say "the imports work as they are: no wheel installed"
else
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    say "imports fail and .whl/ holds no wheels: run benchmarks/device_wheels.sh here, then carry .whl"
    exit 2
  fi
  export PYTHONPATH="$SITE:$PYTHONPATH"
  install .whl || { say "pip install failed"; exit 2; }
  if ! probe; then
    if ls .whl/fallback/*.whl >/dev/null 2>&1; then
      say "imports still fail (log: ${log}); installing .whl/fallback (protobuf)"
      install .whl/fallback || { say "pip install failed"; exit 2; }
    fi
    if ! probe; then
      say "imports still fail:"; "$PY" -c 'import mmer_jax.train, mmer_jax.benchmark, tensorflow_datasets' 2>&1 | tail -20 >&2
      exit 2
    fi
  fi
fi
say "ready in $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $start}") s ($("$PY" --version 2>&1))"
exec "$PY" -u benchmarks/device_check.py "$@"
