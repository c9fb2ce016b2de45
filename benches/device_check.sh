#!/usr/bin/env bash
# GPU checks for a session that is lent a device machine (issue 4's GPU goal and the
# gpu-marked tests). The machine has its own Python 3.12, torch and transformers (see
# ../.library/device/KINDS.md); only the kdmem wheel travels. Here:
#
#   .venv/bin/maturin build --release -o .whl        # abi3 wheel; add /.whl/ to .git/info/exclude
#
# then the device tool's `run` with carry [".whl"], timeout_s 540 and the command
#
#   bash benches/device_check.sh
#
# Logs land in $OUT (measure.log, gpu.log, env.log). Sizes fit one 15-minute lease.
set -uo pipefail
OUT=${OUT:-/tmp/kdmem-device-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/kdmem-*.whl || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, kdmem; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'kdmem', kdmem.__version__, torch.cuda.get_device_name())" \
  2>&1 | tee "$OUT/env.log"
# Labels alone >= 5x vs generate() (goal), plus the full and pair measurements, at 50+50.
timeout 360 python3 benches/bench_measure.py --pythia-1.4b --device cuda --dtype bfloat16 \
  --n 512 --prefix 50 --suffix 50 --batch 64 --repeat 3 --skip-memory 2>&1 | tee "$OUT/measure.log"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/measure 2>&1 | tee "$OUT/gpu.log"
