# Two commands do all set-up: `make run` (audit on the embedded default) and `make test`.
# Both create .venv when missing and install the package with its dependencies into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra Hydra overrides for `make run`, e.g. make run ARGS="experiment=synthetic_group"
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test wheel bench bench-pipeline clean check sweeps table1 table2 agreement figures paper tightness mitigation

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m robustness_bias $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The wheel (configs inside; console command robustness-bias) into dist/; tests/test_wheel.py installs and runs it.
wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation --wheel-dir dist .

# Our estimators against foolbox, torchattacks, adv-lib and the reference certify loop (small CNN on the CPU;
# pass BENCH_ARGS="--model resnet50 --image-size 224 --device cuda" on a GPU). adv-lib is installed without its
# dependencies (it wants visdom for live plots alone); without the registry its rows are skipped.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -c "import adv_lib" 2>/dev/null || $(PY) -m pip install --quiet --no-deps 'adv-lib==0.2.8' \
	  || echo "adv-lib could not be installed: the bench skips its rows"
	$(PY) bench/estimators.py $(BENCH_ARGS)

# Training and audit throughput per model, and the projected hours of the paper's UTKFace grid
# (on a GPU: BENCH_ARGS="--precision bf16 --channels-last --compile smoothing --data-dir /data/UTKFace"); with
# BENCH_ARGS="--quick-tier --data-dir data/UTKFace", the quick tier's minutes per seed instead.
bench-pipeline: $(STAMP)
	$(PY) bench/pipeline.py $(BENCH_ARGS)

# The paper's tables and figures: each target runs the sweeps it needs (finished jobs are skipped)
# and then the report. SMOKE=1: the same chain on the bundled digits and the synthetic data with tiny
# settings, on a CPU, in minutes. QUICK=1: the quick tier on the real UTKFace faces (conf/experiment/
# utk_quick.yaml), sized for a 2-core CPU. DATA_DIR=/path (the folder holding UTKFace/, ...)
# points the real experiments at the datasets.
SMOKE ?=
QUICK ?=
DATA_DIR ?= data
SWEEP_ROOT ?= multirun
SWEEP_ARGS ?=
# SEEDS=0,1,2: train every model of the sweeps once per seed; the report's seeds table and findings then say
# which σ hold in every seed (the quick tier sweeps seeds 0,1,2 by default: conf/experiment/utk_quick.yaml)
SEEDS ?=
SEED_ARGS := $(if $(SEEDS),seed=$(SEEDS))
ifeq ($(SMOKE),1)
EXPERIMENTS ?= smoke_digits smoke_synthetic
REPORT_DIR ?= reports/smoke
else ifeq ($(QUICK),1)
EXPERIMENTS ?= utk_quick
REPORT_DIR ?= reports/quick
else
EXPERIMENTS ?= utk_race adience_gender cifar10 cifar100 cifar100super
REPORT_DIR ?= reports/paper
endif
REPORT := $(PY) -m robustness_bias.report $(addprefix $(SWEEP_ROOT)/,$(EXPERIMENTS)) --out $(REPORT_DIR)

# Pre-flight of every job of every experiment (data present, ImageNet weights present or downloadable) before
# the first one trains; `sweeps` runs it first.
check: $(STAMP)
	for e in $(EXPERIMENTS); do \
	  ROBUSTNESS_BIAS_DATA=$(DATA_DIR) $(PY) -m robustness_bias check experiment=$$e $(SEED_ARGS) $(SWEEP_ARGS) || exit 1; \
	done

sweeps: check
	for e in $(EXPERIMENTS); do \
	  ROBUSTNESS_BIAS_DATA=$(DATA_DIR) $(PY) -m robustness_bias experiment=$$e hydra.sweep.dir=$(SWEEP_ROOT)/$$e $(SEED_ARGS) $(SWEEP_ARGS) || exit 1; \
	done

table1: sweeps
	$(REPORT) --only table1

table2: sweeps
	$(REPORT) --only table2

agreement: sweeps
	$(REPORT) --only agreement

figures: sweeps
	$(REPORT) --only figures

paper: sweeps
	$(REPORT)

# σ at tighter distances (QUICK=1): the quick tier's trained models audited again with DeepFool, CW, FMN and each
# face's best bound (conf/experiment/utk_quick_tight.yaml), then the report's tightness tables. Finished jobs are skipped.
# Jobs are named <number>-<model>-seed<seed> (conf/experiment/utk_quick.yaml).
tightness: sweeps
	for folder in $(SWEEP_ROOT)/utk_quick/*-seed*/; do \
	  job=$$(basename $$folder); model=$${job#*-}; model=$${model%-seed*}; \
	  test -f $(SWEEP_ROOT)/utk_quick_tight/$$job/result.json || ROBUSTNESS_BIAS_DATA=$(DATA_DIR) $(PY) -m robustness_bias \
	    experiment=utk_quick_tight model=$$model seed=$${job##*-seed} model.checkpoint=$$folder/checkpoints/last.ckpt \
	    hydra.run.dir=$(SWEEP_ROOT)/utk_quick_tight/$$job || exit 1; \
	done
	$(PY) -m robustness_bias.report $(SWEEP_ROOT)/utk_quick_tight --out $(REPORT_DIR)/tightness --only tightness settings

# The mitigation on the real faces (issue 39; QUICK=1): conf/experiment/utk_mitigation.yaml's sweep (the UTK
# classifier and ResNet-18, each with no mitigation, group-balanced batches by race and by age, and the regularizer
# on white faces and on ages 40-59), then the report's mitigation tables into $(REPORT_DIR)/mitigation. Finished
# jobs are skipped.
mitigation: $(STAMP)
	@test "$(QUICK)" = 1 || { echo "make mitigation: only the quick tier exists; pass QUICK=1 DATA_DIR=..."; exit 2; }
	$(MAKE) sweeps EXPERIMENTS=utk_mitigation
	$(PY) -m robustness_bias.report $(SWEEP_ROOT)/utk_mitigation --out $(REPORT_DIR)/mitigation \
	  --only mitigation sigma_final estimators settings

clean:
	rm -rf outputs .pytest_cache build dist
