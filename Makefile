# Two commands do all set-up: `make run` (audit on the embedded default) and `make test`.
# Both create .venv when missing and install the package with its dependencies into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra Hydra overrides for `make run`, e.g. make run ARGS="+experiment=synthetic_group"
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m robustness_bias $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Our estimators against foolbox, torchattacks and the reference certify loop (small CNN on the CPU;
# pass BENCH_ARGS="--model resnet50 --image-size 224 --device cuda" on a GPU).
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) bench/estimators.py $(BENCH_ARGS)

clean:
	rm -rf outputs .pytest_cache
