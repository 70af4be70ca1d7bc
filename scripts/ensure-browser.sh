#!/usr/bin/env bash
# Makes sure the browser tests (tests/deploy/test_dashboard.py, marker `browser`) can run: installs the
# Debian packages `chromium` and `chromium-driver` when `chromium` or `chromedriver` is missing (needs
# root or sudo). Never fails the caller: without the packages the browser tests skip with the reason.
set -uo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "ensure-browser: need root (or sudo) to run: $*" >&2; return 1; fi
}
echo "ensure-browser: chromium/chromedriver not found; installing the Debian packages chromium and chromium-driver" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
  && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >&2 \
  || echo "ensure-browser: install failed; the browser tests will skip" >&2
exit 0
