#!/usr/bin/env bash
# The paper at laptop scale (conf/experiment/toy_paper.yaml): Table 1's six methods and the single-model ablation,
# 3 fine-tuning iterations, 3 seeds, on the embedded tiny model and Arithmetic; then the report (report.md) with
# its table and figures (plots/: accuracy and diversity against the iteration).
#   experiments/toy_paper.sh [key=value ...]      e.g. dataset.split=dev: measure on the dev problems instead
# $SEEDS and $METHODS choose a part of the study (default: all of it); $EXPERIMENT another preset of the same shape
# (default toy_paper; experiments/smollm2_arithmetic.sh runs mafl/conf/experiment/smollm2_arithmetic.yaml).
# $JOBS runs at a time (default 2, one CPU thread each: on 2 cores two small runs use the machine better than one).
# A stopped study restarted with the same command continues where it stopped (each run resumes its folder).
# Output: $MAFL_OUT (default multirun/toy_paper)/<method>_seed<k>/ and <method>_seed<k>.log.
set -euo pipefail
out=${MAFL_OUT:-multirun/toy_paper}
mafl=${MAFL:-mafl}
max_jobs=${JOBS:-2}
experiment=${EXPERIMENT:-toy_paper}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$out"
start=$SECONDS

# the tiny model is built (or found in the cache) once, before the runs share it
$mafl "experiment=$experiment" method=single "$@" dataset.n_train=1 dataset.n_eval=1 logger=none \
  "run_dir=$out/.model_check" >/dev/null
rm -rf "$out/.model_check"

run() {
  local name="$1_seed$2"
  if $mafl "experiment=$experiment" "method=$1" "seed=$2" "run_dir=$out/$name" "${@:3}" >"$out/$name.log" 2>&1; then
    echo "done: $name ($(( (SECONDS - start) / 60 )) min)"
  else
    echo "FAILED: $name (see $out/$name.log)"; return 1
  fi
}

status=0
for seed in ${SEEDS:-0 1 2}; do
  for method in ${METHODS:-multiagent_ft multiagent_ft_single_model star majority_ft debate self_refine majority_tokens majority single}; do
    while (( $(jobs -rp | wc -l) >= max_jobs )); do wait -n || status=1; done
    run "$method" "$seed" "$@" &
  done
done
while (( $(jobs -rp | wc -l) > 0 )); do wait -n || status=1; done
echo "$experiment: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
$mafl report "$out"/*_seed*/ --plot "$out/plots" | tee "$out/report.md"
exit $status
