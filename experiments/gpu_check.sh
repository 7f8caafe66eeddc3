#!/usr/bin/env bash
# The whole loop on CUDA in one prepared check (experiments/gpu_check.py): the tiny model and a random ~1B Llama
# (no weights needed), hf in bfloat16, a LoRA and a full fine-tune, accelerate with the GPUs present, vLLM where
# installed; prints debate tokens/s, peak GPU memory per stage and the debate's share of raw forward throughput.
# Meant to finish within 8 minutes on one H100/H200.
#
#   experiments/gpu_check.sh [--dry-run | --cpu] [--out DIR] [--problems N]   on the GPU machine (the 2 modes: any)
#   experiments/gpu_check.sh --wheelhouse [--pure]                           where PyPI is reachable: fill wheelhouse/
#
# A bare machine needs torch, transformers, peft and accelerate; mafl's other dependencies (gpu_check_wheels.txt)
# come from experiments/wheelhouse/ beside this script (at most 64 MiB): the run installs those the machine lacks,
# with --no-index, into $GPU_CHECK_SITE (default /tmp/mafl-gpu-check/site-packages: dill, which datasets hashes its
# tables with, pickles the classes of a module by value unless its path holds "site-packages", and pyarrow's cannot
# be), and mafl itself is used from this checkout (PYTHONPATH), not installed. --wheelhouse downloads for the
# Python of $PYTHON (or $WHEEL_PYTHON, e.g. 3.12, for another machine's) on x86-64 Linux; --pure leaves out the
# compiled wheels (pyarrow, pandas, xxhash) for a machine that has them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
wheels="$here/wheelhouse"
site="${GPU_CHECK_SITE:-/tmp/mafl-gpu-check/site-packages}"
[[ "$site" == *site-packages* ]] || {
  echo "gpu_check: GPU_CHECK_SITE=$site must have site-packages in its path" >&2; exit 1; }
dists=() modules=() kinds=()
while read -r dist module kind; do
  [[ -z "$dist" || "$dist" == \#* ]] && continue
  dists+=("$dist") modules+=("$module") kinds+=("${kind:-pure}")
done <"$here/gpu_check_wheels.txt"

if [[ "${1:-}" == "--wheelhouse" ]]; then
  version="${WHEEL_PYTHON:-$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
  target=(--python-version "$version" --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64)
  mkdir -p "$wheels"
  for i in "${!dists[@]}"; do
    [[ "${2:-}" == "--pure" && "${kinds[$i]}" == binary ]] && continue
    if ! "$python" -m pip download -q --only-binary=:all: --no-deps "${target[@]}" -d "$wheels" "${dists[$i]}" \
         2>/dev/null; then
      # a few (antlr4-python3-runtime 4.9.3) are published as source only: build their (pure Python) wheel
      [[ "${kinds[$i]}" == pure ]] || { echo "gpu_check: no wheel of ${dists[$i]} for Python $version" >&2; exit 1; }
      "$python" -m pip wheel -q --no-deps -w "$wheels" "${dists[$i]}"
    fi
  done
  size=$(du -sm "$wheels" | cut -f1)
  echo "wheelhouse: $wheels (Python $version), ${size} MiB"
  if (( size > 64 )); then echo "wheelhouse: over 64 MiB" >&2; exit 1; fi
  exit 0
fi

for module in torch transformers peft accelerate; do
  "$python" -c "import $module" 2>/dev/null || { echo "gpu_check: $module is missing (pip install $module)" >&2; exit 1; }
done
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
missing=()
for i in "${!dists[@]}"; do
  "$python" -c "import ${modules[$i]}" 2>/dev/null || missing+=("${dists[$i]}")
done
if (( ${#missing[@]} )); then
  [[ -d "$wheels" ]] || {
    echo "gpu_check: ${missing[*]} missing and no $wheels (run: $0 --wheelhouse where PyPI is reachable)" >&2; exit 1; }
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" --find-links "$wheels" "${missing[@]}"
fi
exec "$python" "$here/gpu_check.py" "$@"
