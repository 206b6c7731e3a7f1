#!/usr/bin/env bash
# Renders a workplace's HTML report (daifu report) and takes a screenshot of it in headless
# Chromium (Debian's chromium package, installed if missing), to look at what a user sees.
# Usage: scripts/report_screenshot.sh WORKPLACE OUT.png [build dir]
set -euo pipefail
workplace=$1
png=$2
build=${3:-build}
if ! command -v chromium >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { echo "report_screenshot: chromium is missing and installing it needs root" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
html=$(mktemp --suffix=.html)
profile=$(mktemp -d)
trap 'rm -rf "$html" "$profile"' EXIT
"$build/tools/daifu/daifu" report -w "$workplace" -o "$html"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1000,1400 --screenshot="$(realpath -m "$png")" "file://$html" 2>/dev/null
echo "report_screenshot: wrote $png"
