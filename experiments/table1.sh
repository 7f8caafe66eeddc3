#!/usr/bin/env bash
# Table 1 for one model: every method (Base, Majority, Debate, STaR, Majority FT, ours) x 3 seeds on Arithmetic,
# GSM8K and MATH, then one report with a column per dataset.
#   experiments/table1.sh MODEL [key=value ...]        MODEL: tiny | phi3 | mistral | llama3 | gpt35 (OpenAI API)
#   DATASETS="arithmetic gsm8k" experiments/table1.sh phi3
# Output: $MAFL_OUT (default multirun/table1/<model>)/<dataset>/<job>/
set -euo pipefail
model=${1:-tiny}
shift $(( $# > 0 ? 1 : 0 ))
out=${MAFL_OUT:-multirun/table1/${model}}
mafl=${MAFL:-mafl}
for dataset in ${DATASETS:-arithmetic gsm8k math}; do
  $mafl -m "experiment=[${dataset}_${model},table1]" "hydra.sweep.dir=${out}/${dataset}" "$@"
done
$mafl report "$out" --plot "$out/plots"
