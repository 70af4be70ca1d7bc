#!/usr/bin/env bash
# Run every benchmark; each prints a table and writes bench/results/<name>.json. Called by `make bench`.
# First sets up the peer venvs (.venv-peers/, bench/peers.sh); a peer that fails to install is reported
# and skipped by the benchmarks that compare against it, and the run goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 \
       TOKENIZERS_PARALLELISM=false
if ! bash bench/peers.sh; then
    echo "bench: some peers could not be set up (see above); continuing without them" >&2
fi
if ! bash bench/peers_litellm.sh; then
    echo "bench: the LiteLLM proxy could not be set up (see above); continuing without it" >&2
fi
"$PY" bench/routing_overhead.py "$@"
"$PY" bench/router_serve.py
"$PY" bench/gateway_overhead.py
"$PY" bench/service_overhead.py
"$PY" bench/expert_scaling.py
"$PY" bench/embedder_backends.py
"$PY" bench/routing_text.py
"$PY" bench/front_doors.py
"$PY" bench/routing_throughput.py
"$PY" bench/scaling_ramp.py
