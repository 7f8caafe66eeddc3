#!/usr/bin/env bash
# The whole loop on CUDA in one prepared check (experiments/gpu_check.py): the tiny model and a random ~1B Llama
# (no weights needed), hf in bfloat16, a LoRA and a full fine-tune, accelerate with the GPUs present, vLLM where
# installed; prints debate tokens/s, peak GPU memory per stage and the debate's share of raw forward throughput.
# Meant to finish within 8 minutes on one H100/H200.
#
#   experiments/gpu_check.sh [--dry-run] [--out DIR] [--problems N]     on the GPU machine (--dry-run: on any)
#   experiments/gpu_check.sh --wheelhouse                                 where PyPI is reachable: fill wheelhouse/
#
# A bare machine needs torch, transformers, peft and accelerate; mafl's other (pure-Python) dependencies come from
# experiments/wheelhouse/ beside this script (at most 64 MiB), installed with --no-index, and mafl itself is used
# from this checkout (PYTHONPATH), not installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
wheels="$here/wheelhouse"
# what mafl imports to run the loop, beyond torch, transformers, peft and accelerate (pure Python)
needed=(hydra-core omegaconf antlr4-python3-runtime==4.9.3 trl rich tqdm filelock)

if [[ "${1:-}" == "--wheelhouse" ]]; then
  mkdir -p "$wheels"
  "$python" -m pip download --only-binary=:all: --no-deps -d "$wheels" "${needed[@]}"
  size=$(du -sm "$wheels" | cut -f1)
  echo "wheelhouse: $wheels, ${size} MiB"
  if (( size > 64 )); then echo "wheelhouse: over 64 MiB" >&2; exit 1; fi
  exit 0
fi

for module in torch transformers peft accelerate; do
  "$python" -c "import $module" 2>/dev/null || { echo "gpu_check: $module is missing (pip install $module)" >&2; exit 1; }
done
if ! "$python" -c "import hydra, omegaconf, trl" 2>/dev/null; then
  [[ -d "$wheels" ]] || { echo "gpu_check: hydra-core/omegaconf/trl missing and no $wheels (run: $0 --wheelhouse where PyPI is reachable)" >&2; exit 1; }
  "$python" -m pip install --no-index --no-deps --find-links "$wheels" "${needed[@]}"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$here/gpu_check.py" "$@"
