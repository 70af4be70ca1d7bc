#!/usr/bin/env bash
# Run every benchmark; each prints a table and writes bench/results/<name>.json. Called by `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 \
       TOKENIZERS_PARALLELISM=false
"$PY" bench/routing_overhead.py "$@"
"$PY" bench/gateway_overhead.py
"$PY" bench/expert_scaling.py
