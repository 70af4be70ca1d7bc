#!/usr/bin/env bash
# Runs the whole suite. Starts a throw-away PostgreSQL on loopback for the registry tests unless
# COE_TEST_POSTGRES=0 (scripts/with-postgres.sh installs the Debian package when it is missing), and
# installs the browser the dashboard tests drive (scripts/ensure-browser.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The dashboard's browser tests need Debian chromium + chromium-driver (skip the install: COE_TEST_BROWSER=0).
if [[ "${COE_TEST_BROWSER:-1}" != "0" ]]; then scripts/ensure-browser.sh; fi
# The `vllm` tests run against vLLM's CPU build in .venv-vllm (built here once; scripts/install-vllm.sh).
# Where it cannot install, the run stops with the reason; COE_TEST_VLLM=0 then skips those tests.
if [[ "${COE_TEST_VLLM:-1}" != "0" ]]; then
  scripts/install-vllm.sh || { echo "run-tests: vLLM's CPU build did not install; rerun with COE_TEST_VLLM=0 to skip the vllm tests" >&2; exit 1; }
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
if [[ "${COE_TEST_POSTGRES:-1}" != "0" && -x scripts/with-postgres.sh ]]; then
  exec scripts/with-postgres.sh .venv/bin/python -m pytest -p no:cacheprovider "$@"
else
  exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
fi
