#!/usr/bin/env bash
# backend=vllm against the real engine, on this machine, in minutes (CI does not install vLLM: docs/vllm.md):
#   1. vLLM's CPU build in its own virtual environment (experiments/vllm_install.sh, once);
#   2. the engine tests (tests/test_backend_vllm_engine.py: greedy debates against hf token by token, likelihoods,
#      the base model's rows of a call with adapters, seeded sampling) and the contract tests;
#   3. `mafl method=multiagent_ft debug=smoke backend=vllm` on the tiny model, to the end;
#   4. the same run killed (SIGKILL) during its fine-tunes, then the same command again: it must resume and end with
#      the results of step 3.
#   bash experiments/vllm_check.sh                  # the tiny model
#   bash experiments/vllm_check.sh model=smollm2    # steps 3-4 on another model (any overrides of mafl's config)
# MAFL_VLLM_VENV: the environment (default .venv-vllm); MAFL_VLLM_CHECK_DIR: where the runs go (default: a temporary
# folder); VLLM_CPU_KVCACHE_SPACE: the engine's KV cache in GiB (default here 1).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MAFL_VLLM_VENV:-.venv-vllm}
if ! "$venv/bin/python" -c "import vllm" >/dev/null 2>&1; then
  bash experiments/vllm_install.sh "$venv"
fi
py=$venv/bin/python
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
work=${MAFL_VLLM_CHECK_DIR:-$(mktemp -d)}
mkdir -p "$work"
overrides=("$@")
echo "vllm_check: $("$py" -c "import importlib.metadata as m, torch; print('vllm-cpu', m.version('vllm-cpu'), 'torch', torch.__version__, 'transformers', m.version('transformers'))"); runs in $work"
echo "vllm_check: machine load: $(uptime)"

echo "== the engine and contract tests"
status=0
"$py" -m pytest tests/test_backend_vllm_engine.py tests/test_backend_vllm_contract.py -q -s -p no:cacheprovider \
  > "$work/tests.log" 2>&1 || status=$?
grep -E "agreeing|[0-9]+ (passed|failed|skipped|error)" "$work/tests.log" || true
[[ $status -eq 0 ]] || { tail -30 "$work/tests.log"; echo "vllm_check: the tests failed ($work/tests.log)"; exit 1; }

run() {  # mafl with the smoke settings, backend=vllm, into run folder $1
  local dir=$1; shift
  "$py" -m mafl method=multiagent_ft debug=smoke backend=vllm "${overrides[@]}" "run_dir=$dir" \
    "hydra.run.dir=$dir.hydra" "$@"
}

echo "== multiagent_ft debug=smoke backend=vllm ${overrides[*]}"
start=$(date +%s)
run "$work/whole" > "$work/whole.log" 2>&1 || { tail -20 "$work/whole.log"; echo "vllm_check: the run failed"; exit 1; }
echo "finished in $(( $(date +%s) - start )) s; $(grep -E "accuracy" "$work/whole.log" | tail -3 | tr -s ' ')"

echo "== the same run killed during its fine-tunes, then resumed"
marker=$work/killed/iter_1/models/generator_1.json
setsid "$py" -m mafl method=multiagent_ft debug=smoke backend=vllm "${overrides[@]}" "run_dir=$work/killed" \
  "hydra.run.dir=$work/killed.hydra" > "$work/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1800); do
  [[ -e $marker ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
kill -9 -- "-$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[[ -e $marker ]] || { tail -20 "$work/killed.log"; echo "vllm_check: the run ended before its fine-tunes"; exit 1; }
# results.json is written after every iteration: the run had not finished while iteration 1's eval was not measured
[[ ! -e $work/killed/iter_1/eval/metrics.json ]] || { echo "vllm_check: the run finished before the kill"; exit 1; }
echo "killed after $(ls "$work/killed/iter_1/models" | grep -c json) finished fine-tunes"
run "$work/killed" > "$work/resumed.log" 2>&1 || { tail -20 "$work/resumed.log"; echo "vllm_check: resume failed"; exit 1; }
"$py" experiments/compare_runs.py --require-equal "$work/whole" "$work/killed" > "$work/compare.log" \
  || { cat "$work/compare.log"; echo "vllm_check: the resumed run's results differ from the whole run's"; exit 1; }
tail -1 "$work/compare.log"
echo "vllm_check: all passed ($(uptime | sed 's/.*load/load/'))"
