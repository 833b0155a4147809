#!/usr/bin/env bash
# Runs one config over several seeds, one workdir per seed: ROOT/seed_<SEED>.
#
#   launch/sweep.sh CONFIG ROOT SEED [SEED ...] [-- FLAGS FOR skillearn_jax.main]
#   launch/sweep.sh configs/darts.py:2nd runs/darts2 0 1 2 3
#   launch/sweep.sh configs/darts.py:quick runs/q $(seq 0 4) -- --config.num_epochs=3
#
# Each run logs to ROOT/seed_<SEED>/log.txt. Running the same sweep again
# resumes every seed from its last checkpoint (finished seeds return at once).
# Environment: SWEEP_PARALLEL=N runs N seeds at a time (default 1; on one
# accelerator, runs at once share it); SWEEP_DRY_RUN=1 prints the commands only;
# PYTHON picks the interpreter (default python).
# Exit status: 0 when every seed finished, 1 otherwise (failed seeds listed).
set -euo pipefail

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 3 ]] || usage
config=$1
root=$2
shift 2
seeds=()
while [[ $# -gt 0 && $1 != -- ]]; do
  [[ $1 =~ ^[0-9]+$ ]] || { echo "sweep.sh: seed '$1' is not a non-negative integer" >&2; exit 2; }
  seeds+=("$1")
  shift
done
[[ $# -gt 0 ]] && shift   # the --
extra=("$@")
[[ ${#seeds[@]} -gt 0 ]] || usage
parallel=${SWEEP_PARALLEL:-1}
[[ $parallel =~ ^[1-9][0-9]*$ ]] || { echo "sweep.sh: SWEEP_PARALLEL='$parallel' must be a positive integer" >&2; exit 2; }
python=${PYTHON:-python}

run_seed() {
  local seed=$1 workdir="$root/seed_$1"
  local cmd=("$python" -m skillearn_jax.main "--config=$config"
             "--workdir=$workdir" "--config.seed=$seed" ${extra[@]+"${extra[@]}"})
  if [[ ${SWEEP_DRY_RUN:-0} == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    return 0
  fi
  mkdir -p "$workdir"
  echo "sweep.sh: seed $seed -> $workdir" >&2
  if [[ $parallel == 1 ]]; then
    "${cmd[@]}" 2>&1 | tee -a "$workdir/log.txt"
  else
    "${cmd[@]}" >>"$workdir/log.txt" 2>&1
  fi
}

# Background runs report failure through a file: their exit statuses are
# not reliably kept once `wait -n` has reaped them.
failed_file=$(mktemp)
trap 'rm -f "$failed_file"' EXIT
for seed in "${seeds[@]}"; do
  if [[ $parallel == 1 ]]; then
    run_seed "$seed" || echo "$seed" >>"$failed_file"
    continue
  fi
  while [[ $(jobs -rp | wc -l) -ge $parallel ]]; do
    wait -n || true
  done
  { run_seed "$seed" || echo "$seed" >>"$failed_file"; } &
done
wait
mapfile -t failed <"$failed_file"

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "sweep.sh: failed seeds: ${failed[*]} (see $root/seed_<SEED>/log.txt)" >&2
  exit 1
fi
