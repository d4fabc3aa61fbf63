#!/usr/bin/env bash
# One-time download of the Python 3.12 wheels that the lent GPU machines lack, into .whl/ (ignored,
# never committed), for benchmarks/device_check.sh (docs/device_check.md).
#
#   bash benchmarks/device_wheels.sh                       # the wheels, into .whl/
#   bash benchmarks/device_wheels.sh --authors_mmin=PATH --authors_imder=PATH --authors_mmgcn=PATH
#                                                          # also copies the authors' checkouts
#                                                          # into .whl/authors/{mmin,imder,mmgcn}
#
# The GPU machines (device tool, /work/.library/device/KINDS.md) run Python 3.12 with JAX 0.11.2,
# flax, optax, orbax-checkpoint, numpy, h5py, matplotlib, absl-py, etils, PyTorch and
# torch-geometric, and reach no package registry. What mmer_jax needs beyond that travels as
# wheels: the `device` tool's `carry: [".whl"]` copies this folder (64 MiB at most with the
# working tree; these wheels take about 4 MiB).
#
#   WHEELS     what pyproject.toml's dependencies need that the machines lack, and their own
#              missing requirements (each wheel's Requires-Dist, checked below against the
#              machines' package list). Versions: those .ci/run installs (tested together).
#   promise    has no wheel on PyPI (an sdist only, pure Python): built here with `pip wheel`.
#   fallback/  protobuf, carried but installed only if tensorflow-metadata's generated code
#              refuses the machine's own protobuf (benchmarks/device_check.sh probes first).
#
# Needs pip and network access here (PyPI); any Python >= 3.9 runs it (`PYTHON=...` to choose).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl

WHEELS=(
  jraph==0.0.6.dev0
  ml-collections==1.1.0
  tensorboardX==2.6.5
  tensorflow-datasets==4.9.10
  array-record==0.8.6          # tfds reads the built datasets' array_record files
  dm-tree==0.1.10              # tfds
  immutabledict==4.3.1         # tfds
  simple-parsing==0.1.9        # tfds
  docstring-parser==0.18.0     # simple-parsing
  tensorflow-metadata==1.21.0  # tfds
  googleapis-common-protos==1.76.0  # tensorflow-metadata
  termcolor==3.3.0             # tfds
  toml==0.10.2                 # tfds
)
SDISTS=(promise==2.3)          # tfds; no wheel on PyPI
FALLBACK=(protobuf==7.36.2)    # installed only when the machine's protobuf is refused

authors=()
for arg in "$@"; do
  case "$arg" in
    --authors_mmin=*|--authors_imder=*|--authors_mmgcn=*)
      name=${arg%%=*}; name=${name#--authors_}; authors+=("$name=${arg#*=}") ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
quiet() { "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
DOWNLOAD=(-m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12
          --implementation cp "${PLATFORMS[@]}")

mkdir -p "$DEST/fallback"
rm -f "$DEST"/*.whl "$DEST"/fallback/*.whl
quiet "$PY" "${DOWNLOAD[@]}" -d "$DEST" "${WHEELS[@]}"
quiet "$PY" -m pip wheel --quiet --no-deps -w "$DEST" "${SDISTS[@]}"
quiet "$PY" "${DOWNLOAD[@]}" -d "$DEST/fallback" "${FALLBACK[@]}"

# The authors' code (their PyTorch step benchmarks on the GPU): a copy of each checkout, its git
# history included (benchmarks/authors_*_step.py record the commit), its files over 1 MB left out
# (their feature pickles: not needed, and the device tool carries 64 MiB at most).
for entry in "${authors[@]}"; do
  name=${entry%%=*}; src=${entry#*=}; dst="$DEST/authors/$name"
  rm -rf "$dst"; mkdir -p "$DEST/authors"
  if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    branch=()
    if [ "$name" = mmin ]; then branch=(--branch master); fi  # AIM3-RUC/MMIN: the master branch
    git clone --quiet --no-checkout "${branch[@]}" "$src" "$dst"
    git -C "$dst" ls-tree -r -l -z HEAD | while IFS= read -r -d '' line; do
      meta=${line%%$'\t'*}; path=${line#*$'\t'}; size=$(awk '{print $4}' <<<"$meta")
      if [[ "$size" =~ ^[0-9]+$ ]] && [ "$size" -le 1000000 ]; then  # size BAD: blob absent
        printf '%s\0' "$path"
      fi
    done | xargs -0 git -C "$dst" checkout HEAD --
  else
    cp -r "$src" "$dst"
  fi
  echo "authors' $name: $dst ($(git -C "$dst" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
done

# Every requirement of every carried wheel is carried too or on the machines (KINDS.md's list, copied
# into benchmarks/device_packages.txt). Extras of a requirement on the machines (tfds asks for
# etils[epath,...]) are not followed: etils' epath extra names importlib_resources, which the
# machines lack and etils does not import on Python 3.12 (it uses importlib.resources).
"$PY" - "$DEST" <<'EOF'
import pathlib, re, sys, zipfile
dest = pathlib.Path(sys.argv[1])
ON_MACHINE = {l.strip() for l in open('benchmarks/device_packages.txt') if l.strip() and l[0] != '#'}
try:
  from packaging.markers import Marker
except ImportError:
  from pip._vendor.packaging.markers import Marker
TARGET = {'python_version': '3.12', 'python_full_version': '3.12.3', 'sys_platform': 'linux',
          'platform_system': 'Linux', 'platform_machine': 'x86_64', 'os_name': 'posix',
          'implementation_name': 'cpython', 'platform_python_implementation': 'CPython',
          'extra': ''}
norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
carried, needs = set(), {}
for whl in sorted(dest.glob('*.whl')):
  with zipfile.ZipFile(whl) as z:
    meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    text = z.read(meta).decode()
  name = norm(re.search(r'^Name: (.+)$', text, re.M).group(1).strip())
  carried.add(name)
  for req in re.findall(r'^Requires-Dist: (.+)$', text, re.M):
    req, _, marker = req.partition(';')
    if marker.strip() and not Marker(marker).evaluate(TARGET):
      continue  # not for Python 3.12 on x86-64 Linux, or an extra
    needs.setdefault(norm(re.split(r'[\s<>=!~\[(;]', req.strip())[0]), set()).add(name)
missing = {n: sorted(by) for n, by in needs.items() if n not in carried and n not in ON_MACHINE}
size = sum(p.stat().st_size for p in dest.rglob('*') if p.is_file())
print(f'{len(carried)} wheels in {dest}/ (+ fallback/), {size / 2**20:.1f} MiB in all with the '
      f'authors\' checkouts; the device tool carries at most 64 MiB with the working tree')
if missing:
  sys.exit(f'requirements neither carried nor on the GPU machines: {missing}')
EOF
