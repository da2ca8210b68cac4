#!/usr/bin/env bash
# One prepared GPU check of plug_lite.train (see benchmarks/gpu_check.py for the steps). On the GPU
# machine, from the repository root, with .gpu/ (benchmarks/gpu_bundle.sh) carried along:
#     bash benchmarks/gpu_check.sh                 # results: $OUT/*.json, $OUT/log.txt
# On CPU first, with the project's .venv (tiny shapes, 2 steps, cpu backend, no unsloth):
#     GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh
# Each step is one process under `timeout`; the whole run keeps inside GPU_CHECK_BUDGET seconds and
# skips a step when less than its minimum is left.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SMOKE=${GPU_CHECK_SMOKE:-0}
export OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$SECONDS
left() { echo $((BUDGET - (SECONDS - T0))); }
log() { echo "[+$((SECONDS - T0))s] == $*"; }

if [ "$SMOKE" = 1 ]; then
  BUDGET=${GPU_CHECK_BUDGET:-3600}; PY=.venv/bin/python; export GC_WORK=/tmp/gc_smoke
  SHAPE=tiny; STEPS=2; QL=cpu; US=""; E2E_BACKEND=cpu; SMALL="--max-length 256"
  QL_PP=""; US_PP=""
else
  BUDGET=${GPU_CHECK_BUDGET:-500}; PY=python3; export GC_WORK=/dev/shm/gc
  SHAPE=1.5b; STEPS=${STEPS:-10}; QL=qlora; US=unsloth; E2E_BACKEND=unsloth; SMALL=""
  for d in common trl unsloth; do
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_$d .gpu/whl_$d/*.whl \
      || { echo "install of .gpu/whl_$d failed"; exit 1; }
  done
  # plug_lite reads the converter's version from llama-cpp-python's metadata; the package itself is
  # not needed to convert (only to run GGUFs, which happens back on the CPU machine)
  mkdir -p /tmp/site_common/llama_cpp_python-0.3.36.dist-info
  printf 'Metadata-Version: 2.1\nName: llama-cpp-python\nVersion: 0.3.36\n' > /tmp/site_common/llama_cpp_python-0.3.36.dist-info/METADATA
  export PLUG_LITE_CACHE=/tmp/plc; rm -rf "$PLUG_LITE_CACHE"; cp -r .gpu/cache "$PLUG_LITE_CACHE"
  QL_PP=/tmp/site_trl:/tmp/site_common; US_PP=/tmp/site_unsloth:/tmp/site_common
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
rm -rf "$GC_WORK"; mkdir -p "$GC_WORK"
log "gpu_check: smoke=$SMOKE budget=${BUDGET}s out=$OUT work=$GC_WORK"

step() {  # NAME TIMEOUT MIN_LEFT PYTHONPATH ARGS...
  local name=$1 tmo=$2 need=$3 pp=$4; shift 4
  local l; l=$(left)
  if [ "$l" -lt "$need" ]; then
    log "$name: skipped ($l s left, needs $need)"
    printf '{"step": "%s", "status": "skipped", "left_s": %s}\n' "$name" "$l" > "$OUT/$name.json"
    return 1
  fi
  [ "$tmo" -gt "$l" ] && tmo=$l
  log "$name (timeout ${tmo}s): $*"
  PYTHONPATH=$pp GC_TIMEOUT=$tmo timeout --signal=TERM --kill-after=10 "$tmo" $PY benchmarks/gpu_check.py "$@" --name "$name"
  local rc=$?
  log "$name: exit $rc"
  return $rc
}

if [ "$SMOKE" != 1 ] && [ -z "${GPU_CHECK_ONLY:-}" ]; then
  log "env"
  PYTHONPATH=$QL_PP timeout 120 python3 -c "import torch, transformers, trl, peft, bitsandbytes, datasets; \
print('qlora env:', torch.__version__, transformers.__version__, trl.__version__, peft.__version__, bitsandbytes.__version__, datasets.__version__)"
  PYTHONPATH=$US_PP timeout 180 python3 -c "import time; t=time.time(); import unsloth, trl, transformers; \
print('unsloth env:', unsloth.__version__, trl.__version__, transformers.__version__, f'import {time.time()-t:.1f}s')" \
    > "$OUT/unsloth_import.txt" 2>&1; tail -3 "$OUT/unsloth_import.txt"
fi

M=$GC_WORK/model-$SHAPE; TINY=$GC_WORK/model-tiny; [ "$SHAPE" = tiny ] && TINY=$M
if [ -n "${GPU_CHECK_ONLY:-}" ]; then  # a second, shorter call: the steps named here, in this order
  for s in $GPU_CHECK_ONLY; do
    case $s in
      build) step build 120 40 "$QL_PP" build --shape "$SHAPE" --out "$M" ;;
      build_tiny) step build_tiny 60 30 "$QL_PP" build --shape tiny --out "$TINY" ;;
      unsloth_packed) step unsloth_packed 150 90 "$US_PP" train --model "$M" --backend unsloth --packing --steps "$STEPS" ;;
      e2e) step e2e 170 70 "${US_PP:-$QL_PP}" e2e --model "$TINY" --backend "$E2E_BACKEND" --steps 5 $SMALL ;;
      bytokens) step bytokens $((60 + 4 * STEPS)) 60 "$QL_PP" train --model "$M" --backend "$QL" --no-packing --group-by-tokens \
                  --steps "$STEPS" $SMALL ;;
      e2e_ref) step e2e_ref 90 30 "$QL_PP" e2e_ref --model "$GC_WORK/e2e" ;;
      packed) step packed $((60 + 4 * STEPS)) 60 "$QL_PP" train --model "$M" --backend "$QL" --packing --steps "$STEPS" $SMALL ;;
      unpacked) step unpacked $((60 + 5 * STEPS)) 60 "$QL_PP" train --model "$M" --backend "$QL" --no-packing --no-group-by-tokens --batch-size 4 \
                  --grad-accum 4 --steps "$STEPS" $SMALL ;;
      packed_nockpt) step packed_nockpt 100 50 "$QL_PP" train --model "$M" --backend "$QL" --packing --steps "$STEPS" \
                       --no-gradient-checkpointing $SMALL ;;
      *) log "unknown step '$s' (build build_tiny packed unpacked bytokens unsloth_packed packed_nockpt e2e e2e_ref)"; exit 2 ;;
    esac
  done
  log "done in $((SECONDS - T0)) s"; exit 0
fi
step build 120 60 "$QL_PP" build --shape "$SHAPE" --out "$M"
[ "$SHAPE" != tiny ] && step build_tiny 60 40 "$QL_PP" build --shape tiny --out "$TINY"
# the new default (ampere: 4 packed 2048-token sequences per micro-batch x 2) against 0.1's (4 rows x 4)
step packed 150 90 "$QL_PP" train --model "$M" --backend "$QL" --packing --steps "$STEPS" $SMALL
step unpacked 150 90 "$QL_PP" train --model "$M" --backend "$QL" --no-packing --no-group-by-tokens --batch-size 4 --grad-accum 4 --steps "$STEPS" $SMALL
if [ -n "$US" ]; then
  step unsloth_packed 200 120 "$US_PP" train --model "$M" --backend unsloth --packing --steps "$STEPS" \
    || step unsloth_unpacked 150 100 "$US_PP" train --model "$M" --backend unsloth --no-packing --no-group-by-tokens --batch-size 4 --grad-accum 4 --steps "$STEPS"
  step qlora_trl115 150 90 "$US_PP" train --model "$M" --backend qlora --packing --steps "$STEPS"
fi
step e2e 200 100 "${US_PP:-$QL_PP}" e2e --model "$TINY" --backend "$E2E_BACKEND" --steps 5 $SMALL
[ "$E2E_BACKEND" = unsloth ] && step e2e_ref 90 30 "$QL_PP" e2e_ref --model "$GC_WORK/e2e"
log "done in $((SECONDS - T0)) s"
ls -la "$OUT"
