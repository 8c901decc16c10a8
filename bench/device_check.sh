#!/usr/bin/env bash
# The GPU rows issues #3, #9 and #18 ask for, on one H100 or H200; the output goes to $OUT (default
# ./device_check). Stages run in the order of STAGES, each under its own time limit, and print as
# they go, so a slow stage leaves the others' figures intact. Seconds each took on an H200 (2026-11-27):
# pipeline ≈ 225, estimators_32 ≈ 145, estimators_224 > 105 (cut there), profile_32 not yet run; graphs
# (CUDA-graphed attacks against eager ones, GPU tests) and the graphed rows added since are not yet timed.
# stream_32 (not yet run on a GPU, about 150 s expected): our eager attacks over all the digits' correctly
# classified inputs in chunks 4× the pool, a call per chunk against one stream through one pool.
# The default order is #18's first: its GPU tests (graphs), its speed and floor goals at 32 px
# (estimators_32) and the stream (stream_32), then #9's projection (pipeline), then the rest. A session's
# device time (15 minutes all told, the machine's start included) holds one call of about 500 s: the
# first three stages (limits 90 + 200 + 200 s), carrying .whl; then STAGES="pipeline" with .bench-data
# in a second call if time is left.
# GRAPHS=0 leaves the CUDA-graphed attacks out of the bench stages (should the graphs stage fail). Our attacks'
# pools are a quarter of their images wide (as an audit's chunk is 4× its pool): not yet run on a GPU since.
# The device machines' python3 has torch, torchvision, lightning, pandas and scipy, not foolbox,
# torchattacks, eagerpy or pytest: put those wheels (and GitPython, gitdb, smmap, which foolbox
# imports; iniconfig, pluggy, pygments, packaging for pytest: the machines' Python 3.12 needs neither
# exceptiongroup nor tomli, and a tomli wheel built for another Python stops the install) in .whl/ and
# carry it (pip download --no-deps -d .whl ... fetches them) for the peer rows and the graphs stage,
# or run with SKIP="foolbox torchattacks" to leave those peers out. Real faces: the pipeline stage
# needs about 2,200 training images (30 steps × 64 + 128), and a call carries at most 64 MiB, so
# carry .bench-data with a 3,000-file subset (13 MB compressed), made by
#   mkdir -p .bench-data && (cd /path/to && ls UTKFace | sort | head -3000 | sed 's|^|UTKFace/|' |
#     tar czf "$OLDPWD/.bench-data/UTKFace-3000.tar.gz" -T -)
# It is used when present (or pass UTK=another.tar.gz); synthetic images otherwise.
set -uo pipefail
OUT=${OUT:-device_check}
mkdir -p "$OUT"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
STAGES=${STAGES:-graphs estimators_32 stream_32 pipeline profile_32 estimators_224}
GRAPHS_ARG=(--cuda-graphs); [ "${GRAPHS:-1}" = 1 ] || GRAPHS_ARG=(--no-cuda-graphs)
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
UTK=${UTK:-.bench-data/UTKFace-3000.tar.gz}
if [ -f "$UTK" ]; then
  mkdir -p /tmp/utk && tar xzf "$UTK" -C /tmp/utk && DATA=(--data-dir /tmp/utk/UTKFace)
fi
for stage in $STAGES; do
  case $stage in
    graphs)   # CUDA-graphed DeepFool and CW give the eager results (tests/test_graphs.py, GPU tests included)
      timeout "${GRAPHS_S:-90}" $PY -m pytest -q -p no:cacheprovider --noconftest tests/test_graphs.py \
        -k "not bench" ;;
    pipeline)   # #9: training and audit rates of the UTKFace grid's six models at 200 px, and the projected hours
      timeout "${PIPELINE_S:-280}" $PY bench/pipeline.py --device "$DEVICE" --precision bf16 --channels-last \
        --compile smoothing "${GRAPHS_ARG[@]}" "${DATA[@]}" --train-steps 30 --audit-images 32 --attack-batch 8 \
        --rs-images 4 ;;
    estimators_32)   # #3: ResNet-50 at 32 px against the peers, smoothing at N = 100,000
      timeout "${ESTIMATORS_32_S:-200}" $PY bench/estimators.py --model resnet50 --image-size 32 --device "$DEVICE" \
        --images 512 --batch-size 128 --rs-n 100000 --rs-precision bf16 --channels-last --rs-compile "${GRAPHS_ARG[@]}" \
        "${SKIP_ARGS[@]}" ;;
    profile_32)   # where our DeepFool's and CW's time goes on the same inputs
      timeout "${PROFILE_S:-90}" $PY bench/estimators.py --model resnet50 --image-size 32 --device "$DEVICE" \
        --images 512 --batch-size 128 --channels-last --profile ;;
    estimators_224)   # #3: ResNet-50 at 224 px, smoothing at N = 10,000
      timeout "${ESTIMATORS_224_S:-200}" $PY bench/estimators.py --model resnet50 --image-size 224 --device "$DEVICE" \
        --images 64 --batch-size 16 --torchattacks-images 8 --rs-n 10000 --rs-precision bf16 --channels-last --rs-compile \
        "${GRAPHS_ARG[@]}" "${SKIP_ARGS[@]}" ;;
    stream_32)   # an audit's chunks a call each against one stream: steps and time of our DeepFool and CW
      timeout "${STREAM_S:-200}" $PY bench/estimators.py --model resnet50 --image-size 32 --device "$DEVICE" \
        --images 2000 --batch-size 128 --channels-last --stream ;;
    *) echo "unknown stage $stage: use graphs, pipeline, estimators_32, profile_32, estimators_224 or stream_32" >&2
       exit 2 ;;
  esac 2>&1 | tee "$OUT/$stage.txt"
done
