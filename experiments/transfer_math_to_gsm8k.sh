#!/usr/bin/env bash
# Zero-shot transfer: fine-tune on MATH (STaR, Majority FT, ours), then evaluate each fine-tuned society on GSM8K
# with no further fine-tuning (rows <method>_transfer), next to the untuned baselines on GSM8K.
#   experiments/transfer_math_to_gsm8k.sh MODEL [key=value ...]      MODEL: tiny | phi3 | mistral | llama3
# Output: $MAFL_OUT (default multirun/transfer/<model>)/{math,gsm8k}/<method>/
set -euo pipefail
model=${1:-tiny}
shift $(( $# > 0 ? 1 : 0 ))
out=${MAFL_OUT:-multirun/transfer/${model}}
mafl=${MAFL:-mafl}
for method in ${METHODS:-star majority_ft multiagent_ft}; do
  train="${out}/math/${method}"
  $mafl "experiment=math_${model}" "method=${method}" "hydra.run.dir=${train}" "$@"
  last=$(ls -d "${train}"/iter_* | sed 's/.*iter_//' | sort -n | tail -1)  # the last fine-tuning iteration
  $mafl "experiment=[math_${model},transfer_gsm8k]" "method=${method}" "method.weights=${train}/iter_${last}/models" \
    "hydra.run.dir=${out}/gsm8k/${method}" "$@" finetune.iterations=0
done
$mafl -m "experiment=gsm8k_${model}" method=single,majority,debate "hydra.sweep.dir=${out}/gsm8k/baselines" "$@"
$mafl report "$out"
