#!/usr/bin/env bash
# Peer gateway for bench/service_overhead.py: the LiteLLM proxy in its own venv, .venv-peers/litellm.
# It never goes into the project .venv (its pins would fight ours). Idempotent: a stamp file per version.
#
#   bash bench/peers_litellm.sh            # installs litellm[proxy]==$LITELLM_VERSION once
#
# The version is pinned on purpose: litellm 1.82.7 and 1.82.8 on PyPI were a credential-stealing
# supply-chain compromise (March 2026; removed since), so this never installs "the latest".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VERSION="${LITELLM_VERSION:-1.82.6}"
DIR=.venv-peers/litellm
STAMP="$DIR/.installed-$VERSION"

if [ -f "$STAMP" ]; then
    echo "litellm[proxy]==$VERSION already in $DIR"
    exit 0
fi
test -x "$DIR/bin/python" || "$PYTHON" -m venv "$DIR"
"$DIR/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$DIR/bin/python" -m pip install -q --disable-pip-version-check "litellm[proxy]==$VERSION"
# The March 2026 payload was a .pth file that runs at every interpreter start: refuse any from litellm.
if compgen -G "$DIR/lib/python*/site-packages/litellm*.pth" >/dev/null; then
    echo "error: unexpected litellm*.pth in $DIR; not using this install" >&2
    exit 1
fi
"$DIR/bin/litellm" --version >/dev/null 2>&1 || { echo "error: $DIR/bin/litellm does not run" >&2; exit 1; }
rm -f "$DIR"/.installed-*
touch "$STAMP"
echo "installed litellm[proxy]==$VERSION in $DIR"
