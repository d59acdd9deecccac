#!/usr/bin/env bash
# GPU check: train braincls_resnet a few epochs on a phantom set with Keras on JAX, no TensorFlow.
#
# For a GPU machine that has PyTorch, JAX and CuPy with CUDA but no TensorFlow and no internet.
# Two steps:
#
#   bench/gpu_check.sh --fetch-wheels   # here (internet, project venv): fills bench/gpu/wheels/
#                                       # (Keras and its small deps, pydantic) and writes the
#                                       # phantom set bench/gpu/data/phantom.npz (needs OpenCV)
#   bench/gpu_check.sh [--allow-cpu] [check.py options]   # on the GPU machine
#
# Carry bench/gpu/wheels and bench/gpu/data with the working tree (both git-ignored, together
# well under 64 MiB). On the GPU machine the script installs, from the carried wheels only, the
# packages the interpreter lacks (into a --target folder put on PYTHONPATH, so the machine's
# own environment is left as it is), sets KERAS_BACKEND=jax (unless set), and runs
# bench/gpu/check.py: devices found, loss and images/s per epoch, one JSON line. Exits non-zero
# on any failure, and when the backend sees no GPU (unless --allow-cpu).
#
# Environment: PYTHON (default python3), GPU_CHECK_SITE (install folder, default
# /tmp/braincls-gpu-site), GPU_CHECK_PY_VERSIONS (for --fetch-wheels, default "3.11 3.12 3.13"),
# KERAS_BACKEND (jax or torch; default jax).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
WHEELS="$HERE/gpu/wheels"
DATA="$HERE/gpu/data/phantom.npz"
PYTHON="${PYTHON:-python3}"

# Keras with its dependencies, and pydantic for braincls.config; numpy and ml-dtypes come with
# JAX on the GPU machine. Versions are the project's locked ones (read from its venv).
PACKAGES=(keras absl-py rich namex h5py optree packaging markdown-it-py mdurl pygments
  typing-extensions pydantic pydantic-core pydantic-settings annotated-types typing-inspection
  python-dotenv)
TOP_LEVEL=(keras pydantic pydantic-settings)

fetch_wheels() {
  local venv_python="$ROOT/.venv/bin/python"
  [[ -x "$venv_python" ]] || { echo "no project venv at $ROOT/.venv" >&2; exit 1; }
  local pins
  pins=$("$venv_python" -c 'import importlib.metadata as m, sys
print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${PACKAGES[@]}")
  rm -rf "$WHEELS.tmp" && mkdir -p "$WHEELS.tmp"
  for version in ${GPU_CHECK_PY_VERSIONS:-3.11 3.12 3.13}; do
    # shellcheck disable=SC2086  # pins is a list of requirement words
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS.tmp" \
      --implementation cp --python-version "$version" --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 $pins
  done
  rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
  TF_CPP_MIN_LOG_LEVEL=2 "$venv_python" "$HERE/gpu/check.py" --prepare --data "$DATA"
  echo "wheels: $(find "$WHEELS" -name '*.whl' | wc -l) files, $(du -sh "$WHEELS" | cut -f1);" \
    "carry bench/gpu/wheels and bench/gpu/data ($(du -sh "$HERE/gpu" | cut -f1) in all)"
}

pins_of() {
  # "name==version" for each name, as the carried wheel file names say.
  local name file version
  for name in "$@"; do
    file=$(cd "$WHEELS" && ls "${name//-/_}"-[0-9]*.whl | head -n 1)
    version=${file#"${name//-/_}"-}
    echo "$name==${version%%-*}"
  done
}

install_missing() {
  local site="${GPU_CHECK_SITE:-/tmp/braincls-gpu-site}"
  local report
  local -a needed
  [[ -d "$WHEELS" && -f "$DATA" ]] || {
    echo "missing $WHEELS or $DATA: run bench/gpu_check.sh --fetch-wheels first, carry both" >&2
    exit 1
  }
  "$PYTHON" -m pip --version >/dev/null || { echo "$PYTHON has no pip" >&2; exit 1; }
  # Resolve against what this interpreter already has (JAX, numpy, ...) and install only the
  # rest, into a folder of its own (pip >= 22.2); older pip: every carried package.
  report="$(mktemp)"
  # shellcheck disable=SC2046  # one word per requirement
  if "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --dry-run \
    --report "$report" $(pins_of "${TOP_LEVEL[@]}"); then
    mapfile -t needed < <("$PYTHON" -c 'import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    print(item["metadata"]["name"] + "==" + item["metadata"]["version"])' "$report")
  else
    echo "pip could not resolve a dry run; installing every carried package" >&2
    mapfile -t needed < <(pins_of "${PACKAGES[@]}")
  fi
  rm -f "$report"
  if ((${#needed[@]})); then
    echo "installing from carried wheels into $site: ${needed[*]}"
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps --upgrade \
      --target "$site" "${needed[@]}"
  else
    echo "every package needed is installed already"
  fi
  export PYTHONPATH="$site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
}

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  fetch_wheels
  exit 0
fi

install_missing
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
"$PYTHON" -c 'import importlib.util
if importlib.util.find_spec("tensorflow"):
    print("note: TensorFlow is installed here; the check does not import it")'
exec "$PYTHON" "$HERE/gpu/check.py" --data "$DATA" "$@"
