#!/usr/bin/env bash
# The GPU rows issues #3 and #9 ask for, in one run of at most 10 minutes on one H100 or H200; the
# output goes to $OUT (default ./device_check). Stages run in order of need, each under its own
# time limit, and print as they go, so a slow stage leaves the others' figures intact.
# The device machines' python3 has torch, torchvision, lightning, pandas and scipy, not foolbox,
# torchattacks or eagerpy: put those wheels (and GitPython, gitdb, smmap, which foolbox imports) in
# .whl/ and carry it for the peer rows, or run with SKIP="foolbox torchattacks" to leave those peers
# out. Real faces: put UTKFace.tar.gz into an ignored folder of the checkout that is carried, and pass
# UTK=that/UTKFace.tar.gz (synthetic images otherwise).
set -uo pipefail
OUT=${OUT:-device_check}
mkdir -p "$OUT"
PY=${PY:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export GIT_PYTHON_REFRESH=quiet   # foolbox imports GitPython, which wants a git program it never uses here
SKIP_ARGS=()
[ -n "${SKIP:-}" ] && read -ra SKIP_ARGS <<< "--skip $SKIP"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
DATA=()
if [ -n "${UTK:-}" ] && [ -f "$UTK" ]; then
  mkdir -p /tmp/utk && tar xzf "$UTK" -C /tmp/utk && DATA=(--data-dir /tmp/utk/UTKFace)
fi
# #9: training and audit rates of the UTKFace grid's six models at 200 px, and the projected hours
timeout ${PIPELINE_S:-300} $PY bench/pipeline.py --device ${DEVICE:-cuda} --precision bf16 --channels-last --compile smoothing \
  "${DATA[@]}" --train-steps 30 --audit-images 32 --attack-batch 32 --rs-images 4 2>&1 | tee "$OUT/pipeline.txt"
# #3: estimators against the peers, ResNet-50 at 32 px (N = 100,000) and 224 px (N = 10,000)
timeout ${ESTIMATORS_32_S:-150} $PY bench/estimators.py --model resnet50 --image-size 32 --device ${DEVICE:-cuda} --images 512 \
  --rs-n 100000 --rs-precision bf16 --channels-last --rs-compile "${SKIP_ARGS[@]}" 2>&1 | tee "$OUT/estimators_32.txt"
timeout ${ESTIMATORS_224_S:-120} $PY bench/estimators.py --model resnet50 --image-size 224 --device ${DEVICE:-cuda} --images 64 \
  --torchattacks-images 8 --rs-n 10000 --rs-precision bf16 --channels-last --rs-compile "${SKIP_ARGS[@]}" 2>&1 \
  | tee "$OUT/estimators_224.txt"
