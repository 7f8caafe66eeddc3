#!/usr/bin/env bash
# The Arithmetic cell of Table 1 with the embedded tiny model, on a CPU: 6 methods x 3 seeds, then the report.
#   experiments/table1_tiny_arithmetic.sh [key=value ...]      (add debug=smoke for a minutes-long check)
set -euo pipefail
DATASETS=arithmetic exec "$(dirname "$0")/table1.sh" tiny "$@"
