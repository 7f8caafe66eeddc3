#!/usr/bin/env bash
# One table on one setup: the table's multirun (mafl/mafl/conf/experiment/<table>.yaml) on the setup
# (mafl/mafl/conf/experiment/<dataset>_<model>.yaml), then `mafl report` on the sweep folder.
#   experiments/sweep.sh TABLE SETUP [key=value ...]
#   e.g. experiments/sweep.sh table1 gsm8k_phi3 ; experiments/sweep.sh table2_ablations arithmetic_tiny debug=smoke
# The sweep folder is $MAFL_OUT, or multirun/<table>/<setup>. $MAFL is the command (default: mafl).
# GSM8K and MATH are read from $MAFL_DATA_DIR (or the hub). Add hydra/launcher=slurm to run the jobs on SLURM.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,8p' "$0"; exit 2
fi
table=$1 setup=$2
shift 2
out=${MAFL_OUT:-multirun/${table}/${setup}}
mafl=${MAFL:-mafl}
$mafl -m "experiment=[${setup},${table}]" "hydra.sweep.dir=${out}" "$@"
$mafl report "$out" --plot "$out/plots"
