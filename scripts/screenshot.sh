#!/usr/bin/env bash
# Regenerates the README's screenshot of the dashboard's keys page, from the
# same headless Chromium the browser test uses: the demo pool, a key cooling
# down after a 429, the rest active. Needs chromium and chromium-driver
# (`apt install chromium chromium-driver`).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/dashboard-keys.png}"
mkdir -p "$(dirname "$out")"
SCREENSHOT_TO="$(pwd)/$out" ALGOAGENT_BROWSER_TESTS=1 \
  cargo test -p server --test api dashboard_browser -- --exact \
  dashboard_browser::an_admin_watches_a_key_cool_down_and_resets_it_in_a_real_browser
echo "wrote $out"
