#!/usr/bin/env bash
# Table 2: ours, with summarisation, without critics, one model on all agents' data, without debate, and Majority FT
#   experiments/table2_ablations.sh [SETUP] [key=value ...]      SETUP: e.g. math_phi3 (default arithmetic_tiny)
set -euo pipefail
setup=${1:-arithmetic_tiny}
shift $(( $# > 0 ? 1 : 0 ))
exec "$(dirname "$0")/sweep.sh" table2_ablations "$setup" "$@"
