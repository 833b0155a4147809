#!/usr/bin/env bash
# The one-shot GPU check (docs/performance.md, "On a GPU"): everything a short GPU lease
# should measure, in one command, inside 8 minutes on one H100, every figure as JSON.
#
#   bash benchmarks/device_check.sh                  # on the GPU machine
#   bash benchmarks/device_check.sh --smoke          # rehearsal on a CPU: tiny sizes, about a minute
#
# Options: --torch_ref PATH  the PyTorch reference (default: ../shared/bench/torch_darts_ref.py
#                            beside the checkout, else shared/bench/ inside it, else none);
#          --wheels DIR      wheels to install first, offline, into a temporary site (default
#                            .whl when it exists; docs/performance.md lists them);
#          --out DIR         where the JSON goes (default $OUT, else ./device_check_out).
# Parts, each under its own timeout, so one that fails or runs out of time leaves its row
# and the next still runs:
#   env    versions and devices                                   -> env.json
#   tests  conv implementations equal, sharding, bf16 (pytest)    -> tests.json
#   steps  benchmarks/search_step.py at batch 64 / 8 cells / C=16: JAX finite difference,
#          first order and exact in float32 and bfloat16, against the PyTorch reference
#          (orders 1 and 2, --device cuda, --bf16) on the same GPU   -> search_step.jsonl
#   search a 200-step DARTS-2nd search through the CLI, projected to the full 50-epoch
#          search (benchmarks/search_projection.py), float32 and bfloat16
#                                                                 -> search_projection.jsonl
# and summary.json (each part's status and seconds) and device_check.log (all output).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMOKE=0
TORCH_REF=''
WHEELS="$ROOT/.whl"
DEST="${OUT:-$ROOT/device_check_out}"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --torch_ref) TORCH_REF="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --out) DEST="$2"; shift ;;
    *) echo "device_check.sh: unknown argument '$1'; allowed: --smoke, --torch_ref PATH, --wheels DIR, --out DIR" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$TORCH_REF" ]; then
  for candidate in "$ROOT/../shared/bench/torch_darts_ref.py" "$ROOT/shared/bench/torch_darts_ref.py"; do
    if [ -f "$candidate" ]; then TORCH_REF=$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate"); break; fi
  done
fi
mkdir -p "$DEST"
LOG="$DEST/device_check.log"
: >"$LOG"
cd "$ROOT" || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  SITE=$(mktemp -d /tmp/skillearn_site.XXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl >>"$LOG" 2>&1 \
    && export PYTHONPATH="$PYTHONPATH:$SITE"
fi

if [ "$SMOKE" = 1 ]; then
  # tiny sizes: a 2-node, 3-cell supernet at batch 2, first order only; the quick search
  T_TESTS=120; T_STEPS=150; T_SEARCH=120; DEVICE=cpu
  TESTS=(tests/nas/test_conv_impl.py::test_resolve_auto_and_refuse_unknown_names
         tests/nas/test_precision.py::test_precisions_and_defaults
         tests/run/test_sharding.py::test_single_device_mesh_in_process)
  SIZES=(--batch 2 --layers 3 --channels 4 --nodes 2 --iters 1 --warmup 0)
  # float32 only: a bfloat16 step compiles for ~50 s on XLA:CPU (tests/nas/test_precision.py
  # covers bfloat16 on the CPU; the GPU run times both)
  STEP_RUNS=("first_order float32")
  SEARCH=(--smoke)
  SEARCH_PRECISIONS=(float32)  # bfloat16 compiles slowly on XLA:CPU; the steps part has it
else
  # 8 minutes: tests 60 s, search steps 255 s, the 200-step searches 165 s
  T_TESTS=60; T_STEPS=255; T_SEARCH=165; DEVICE=cuda
  TESTS=(tests/nas/test_conv_impl.py tests/run/test_sharding.py tests/nas/test_precision.py)
  SIZES=(--batch 64 --layers 8 --channels 16 --iters 5 --warmup 2)
  # most telling first: DARTS-2nd (finite difference) against the reference's order 2
  STEP_RUNS=("finite_difference float32" "finite_difference bfloat16" "first_order float32"
             "first_order bfloat16" "exact float32" "exact bfloat16")
  SEARCH=(--steps 200 --log_every 20)
  SEARCH_PRECISIONS=(float32 bfloat16)
fi

STATUS="$DEST/.status"
: >"$STATUS"
now() { date +%s; }
# part NAME SECONDS CMD...: runs CMD under `timeout`, output to the log, status to summary.json
part() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(now)
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "{\"part\": \"$name\", \"returncode\": $rc, \"timed_out\": $([ $rc = 124 ] || [ $rc = 137 ] && echo true || echo false), \"seconds\": $(($(now) - start))}" >>"$STATUS"
  echo "== $name: exit $rc" | tee -a "$LOG"
  return 0
}

part env 60 "$PY" - "$DEST/env.json" "$TORCH_REF" <<'EOF'
import importlib, json, platform, subprocess, sys
out = {'python': platform.python_version(), 'torch_ref': sys.argv[2] or None}
for name in ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'orbax.checkpoint', 'ml_collections',
             'tensorflow_datasets', 'tensorboardX', 'numpy', 'torch'):
  try:
    out[name] = getattr(importlib.import_module(name), '__version__', 'present')
  except Exception as error:  # a missing package is a finding, not a failure of the part
    out[name] = f'missing: {type(error).__name__}: {error}'
import jax
out['backend'] = jax.default_backend()
out['devices'] = [str(d) for d in jax.devices()]
out['device_kind'] = jax.devices()[0].device_kind
try:
  out['nvidia_smi'] = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                                      '--format=csv,noheader'], capture_output=True, text=True,
                                     timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired):
  out['nvidia_smi'] = None
json.dump(out, open(sys.argv[1], 'w'), indent=1)
print(json.dumps(out))
EOF

part tests "$T_TESTS" "$PY" - "$DEST/tests.json" "${TESTS[@]}" <<'EOF'
import json, subprocess, sys, time
t0 = time.time()
proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rfE', '-p', 'no:cacheprovider',
                       *sys.argv[2:]], capture_output=True, text=True)
print(proc.stdout[-6000:], proc.stderr[-3000:])
lines = [l for l in proc.stdout.splitlines() if l.strip()]
out = {'files': sys.argv[2:], 'returncode': proc.returncode, 'seconds': round(time.time() - t0, 1),
       'result': lines[-1] if lines else '',
       'failed': [l for l in proc.stdout.splitlines() if l.startswith(('FAILED', 'ERROR'))]}
json.dump(out, open(sys.argv[1], 'w'), indent=1)
sys.exit(proc.returncode)
EOF

# search steps: each configuration under the time left of the part's budget
STEPS_END=$(($(now) + T_STEPS))
left() { echo $((STEPS_END - $(now))); }
: >"$DEST/search_step.jsonl"
TORCH_ARGS=()
[ -n "$TORCH_REF" ] && TORCH_ARGS=(--torch_ref "$TORCH_REF")
for run in "${STEP_RUNS[@]}"; do
  set -- $run
  method=$1 precision=$2
  budget=$(left)
  if [ "$budget" -lt 10 ]; then echo "{\"impl\": \"jax\", \"method\": \"$method\", \"precision\": \"$precision\", \"skipped\": \"no time left\"}" >>"$DEST/search_step.jsonl"; continue; fi
  part "step_${method}_${precision}" "$budget" bash -c \
    "\"$PY\" benchmarks/search_step.py --impl jax --methods $method --precision $precision ${SIZES[*]} | grep '^{' >>\"$DEST/search_step.jsonl\""
  # the reference's orders 1 and 2 at this precision, once: after finite difference (after
  # first order when smoke runs no finite difference)
  if { [ "$SMOKE" = 0 ] && [ "$method" = finite_difference ]; } || { [ "$SMOKE" = 1 ] && [ "$method" = first_order ]; }; then
    budget=$(left)
    if [ -z "$TORCH_REF" ]; then
      echo "{\"impl\": \"torch\", \"precision\": \"$precision\", \"skipped\": \"no reference script: pass --torch_ref PATH\"}" >>"$DEST/search_step.jsonl"
    elif ! "$PY" -c 'import torch' 2>/dev/null; then
      echo "{\"impl\": \"torch\", \"precision\": \"$precision\", \"skipped\": \"torch is not installed\"}" >>"$DEST/search_step.jsonl"
    elif [ "$budget" -ge 10 ]; then
      part "torch_${precision}" "$budget" bash -c \
        "\"$PY\" benchmarks/search_step.py --impl torch --device $DEVICE --precision $precision ${TORCH_ARGS[*]} ${SIZES[*]} | grep '^{' >>\"$DEST/search_step.jsonl\""
    fi
  fi
done
# ratios of every JAX row to the reference row of the same order and precision
"$PY" - "$DEST/search_step.jsonl" <<'EOF' >>"$LOG" 2>&1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
torch = {(r['order'], r['precision']): r for r in rows if r.get('impl') == 'torch' and 'median_s' in r}
ratios = []
for r in rows:
  ref = torch.get((r.get('order'), r.get('precision')))
  if r.get('impl') == 'jax' and 'median_s' in r and ref:
    ratios.append({'impl': 'ratio', 'method': r['method'], 'precision': r['precision'],
                   'torch_over_jax_speed': round(ref['median_s'] / r['median_s'], 3)})
with open(sys.argv[1], 'a') as f:
  for row in ratios:
    f.write(json.dumps(row) + '\n')
print(json.dumps(ratios))
EOF

: >"$DEST/search_projection.jsonl"
SEARCH_END=$(($(now) + T_SEARCH))
for precision in "${SEARCH_PRECISIONS[@]}"; do
  budget=$((SEARCH_END - $(now)))
  if [ "$budget" -lt 10 ]; then echo "{\"precision\": \"$precision\", \"skipped\": \"no time left\"}" >>"$DEST/search_projection.jsonl"; continue; fi
  part "search_$precision" "$budget" bash -c \
    "\"$PY\" benchmarks/search_projection.py ${SEARCH[*]} --precision $precision | grep '^{' >>\"$DEST/search_projection.jsonl\""
done

"$PY" - "$STATUS" "$DEST/summary.json" <<'EOF'
import json, sys
parts = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
summary = {'parts': parts, 'all_passed': all(p['returncode'] == 0 for p in parts),
           'seconds': round(sum(p['seconds'] for p in parts), 1)}
json.dump(summary, open(sys.argv[2], 'w'), indent=1)
print(json.dumps(summary))
EOF
rm -f "$STATUS"
echo "device_check: results in $DEST" | tee -a "$LOG"
