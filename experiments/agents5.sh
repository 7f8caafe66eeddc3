#!/usr/bin/env bash
# The 5-agent table: Majority, Debate, Majority FT and ours with 5 agents
#   experiments/agents5.sh [SETUP] [key=value ...]      SETUP: e.g. math_llama3 (default arithmetic_tiny)
set -euo pipefail
setup=${1:-arithmetic_tiny}
shift $(( $# > 0 ? 1 : 0 ))
exec "$(dirname "$0")/sweep.sh" agents5 "$setup" "$@"
