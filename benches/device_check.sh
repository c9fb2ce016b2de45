#!/usr/bin/env bash
# GPU checks for a session that is lent a device machine: issue 4's measurement goal and the
# gpu-marked tests (part `measure`), issue 13's paper-scale goals (part `scale`). The machine
# has its own Python 3.12, torch and transformers (see ../.library/device/KINDS.md); the kdmem
# wheel and the few pure-Python packages it lacks travel in .whl/. Here, first:
#
#   .venv/bin/maturin build --release -o .whl        # abi3 wheel; add /.whl/ to .git/info/exclude
#   .venv/bin/pip download --no-deps --python-version 3.12 --only-binary=:all: -d .whl \
#       tomli_w==1.2.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
#                                                    # what kdmem and TRL's GKD need beyond the image
#                                                    # (checked: all five resolve for Python 3.12)
#
# then the device tool's `run` with carry [".whl"], timeout_s 540 and one of the commands
#
#   bash benches/device_check.sh measure   # labels vs generate() at 50+50 (>= 5x goal), gpu tests
#   bash benches/device_check.sh scale     # soft KD vs TRL GKD at Pythia-1.4B / 6.9B sizes, plan
#                                          # estimate vs torch.cuda.max_memory_allocated
#
# Each part fits one run of about 8 minutes; a 15-minute lease holds one part plus the start.
# Logs land in $OUT (env.log, measure.log, gpu.log, distill.log, plan.log).
#
# DRY_RUN=1 bash benches/device_check.sh scale runs the `scale` code paths on CPU at tiny sizes
# from the repository's .venv (no wheel, no GPU): what a session without a device can check.
set -uo pipefail
PART=${1:-measure}
OUT=${OUT:-/tmp/kdmem-device-check}
mkdir -p "$OUT"
if [ -n "${DRY_RUN:-}" ]; then
  PY=${PY:-.venv/bin/python}
  DEV=cpu
else
  PY=python3
  DEV=cuda
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, transformers, kdmem; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'kdmem', kdmem.__version__, torch.cuda.get_device_name() \
if torch.cuda.is_available() else 'no CUDA device')" 2>&1 | tee "$OUT/env.log"

case "$PART" in
  measure)
    # Labels alone >= 5x vs generate() (goal), plus the full and pair measurements, at 50+50.
    timeout 360 "$PY" benches/bench_measure.py --pythia-1.4b --device "$DEV" --dtype bfloat16 \
      --n 512 --prefix 50 --suffix 50 --batch 64 --repeat 3 --skip-memory 2>&1 | tee "$OUT/measure.log"
    timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/measure 2>&1 | tee "$OUT/gpu.log"
    ;;
  scale)
    if [ -n "${DRY_RUN:-}" ]; then
      SIZE=(--preset tiny-gpu-shapes --steps 4 --batch 4 --seq 64 --kdmem-procs 2)
      PLAN=(--cases tiny)
    else
      # One GPU: FSDP has nothing to shard (the bench says so); with N GPUs add --kdmem-procs N.
      SIZE=(--preset pythia --steps 12 --batch 8 --seq 256)
      PLAN=(--cases "tiny,100m")
    fi
    # Soft KD, bf16 autocast over fp32 master weights, teacher in bf16 under teacher_shard fsdp:
    # tokens/s and peak memory vs TRL's GKD trainer (goal >= 1.2x at <= 0.6x memory), and the
    # plan's estimate beside kdmem's measured peak.
    timeout 420 "$PY" benches/bench_distill.py --device "$DEV" --precision bf16 --repeat 1 \
      --teacher-shard fsdp "${SIZE[@]}" 2>&1 | tee "$OUT/distill.log"
    # The plan vs measured peaks of kdmem's recipes at tiny and ~100M sizes on this device:
    # torch.cuda.max_memory_allocated (and _reserved) over the loop; with DRY_RUN, on CPU, the
    # CPU allocator's peak, live tensor bytes and peak RSS instead.
    timeout 240 "$PY" benches/bench_plan.py --device "$DEV" "${PLAN[@]}" 2>&1 | tee "$OUT/plan.log"
    ;;
  *) echo "usage: bash benches/device_check.sh measure|scale" >&2; exit 2 ;;
esac
