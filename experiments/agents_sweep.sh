#!/usr/bin/env bash
# The number of agents: Debate and ours with 1..5 agents
#   experiments/agents_sweep.sh [SETUP] [key=value ...]      SETUP: e.g. math_phi3 (default arithmetic_tiny)
set -euo pipefail
setup=${1:-arithmetic_tiny}
shift $(( $# > 0 ? 1 : 0 ))
exec "$(dirname "$0")/sweep.sh" agents_sweep "$setup" "$@"
