#!/usr/bin/env bash
# The GPU rows issues #3 and #9 ask for, in one run of about 10 minutes on one H100; the output goes
# to $OUT (default ./device_check).
# The device machines' python3 has torch, torchvision, lightning, pandas and scipy, not foolbox,
# torchattacks or eagerpy: carry those as wheels (the device tool's README says how) for the peer
# rows, or run with SKIP="foolbox torchattacks" to leave those peers out. Real faces: put UTKFace.tar.gz into an ignored folder
# of the checkout that is carried, and pass UTK=that/UTKFace.tar.gz (synthetic images otherwise).
set -uo pipefail
OUT=${OUT:-device_check}
mkdir -p "$OUT"
PY=${PY:-python3}
SKIP_ARGS=()
[ -n "${SKIP:-}" ] && read -ra SKIP_ARGS <<< "--skip $SKIP"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
DATA=()
if [ -n "${UTK:-}" ] && [ -f "$UTK" ]; then
  mkdir -p /tmp/utk && tar xzf "$UTK" -C /tmp/utk && DATA=(--data-dir /tmp/utk/UTKFace)
fi
# #3: estimators against the peers, ResNet-50 at 32 px (N = 100,000) and 224 px (N = 10,000)
timeout 200 $PY bench/estimators.py --model resnet50 --image-size 32 --device cuda --images 512 \
  --rs-n 100000 --rs-precision bf16 --channels-last --rs-compile "${SKIP_ARGS[@]}" 2>&1 | tee "$OUT/estimators_32.txt"
timeout 150 $PY bench/estimators.py --model resnet50 --image-size 224 --device cuda --images 128 \
  --rs-n 10000 --rs-precision bf16 --channels-last --rs-compile "${SKIP_ARGS[@]}" 2>&1 | tee "$OUT/estimators_224.txt"
# #9: training and audit rates of the UTKFace grid's models, and the projected hours
timeout 240 $PY bench/pipeline.py --device cuda --precision bf16 --channels-last --compile "${DATA[@]}" \
  --train-steps 100 --audit-images 128 --rs-images 8 2>&1 | tee "$OUT/pipeline.txt"
