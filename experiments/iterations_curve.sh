#!/usr/bin/env bash
# The iteration curve: 5 fine-tuning iterations of STaR, Majority FT and ours (plots in <sweep>/plots)
#   experiments/iterations_curve.sh [SETUP] [key=value ...]      SETUP: e.g. math_phi3 (default arithmetic_tiny)
set -euo pipefail
setup=${1:-arithmetic_tiny}
shift $(( $# > 0 ? 1 : 0 ))
exec "$(dirname "$0")/sweep.sh" iterations_curve "$setup" "$@"
