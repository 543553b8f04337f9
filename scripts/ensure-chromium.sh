#!/usr/bin/env bash
# Make sure Debian's headless-capable Chromium is installed for the browser tests (tests/ui), idempotent.
# Playwright drives it through executable_path; no browser is ever downloaded (`playwright install` is not used).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
NAME=ensure-chromium
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die

if [[ -x "$CHROMIUM" ]]; then
  say "$("$CHROMIUM" --version 2>/dev/null || echo chromium), already installed"; exit 0
fi
[[ $(id -u) -eq 0 ]] || die "chromium is not installed and we are not root: apt-get install chromium"
say "installing chromium with apt-get (quiet, about a minute)..."
apt_install --no-install-recommends chromium
say "$("$CHROMIUM" --version 2>/dev/null || echo chromium) installed"
