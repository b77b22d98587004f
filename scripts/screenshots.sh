#!/usr/bin/env bash
# Screenshots of every web UI page (light, and dark for the overview and the what-if) into
# docs/screenshots/, taken by the browser test (crates/rltrace/tests/ui.rs) in Debian's headless
# Chromium. Needs the packages chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rltrace-target}"
RLTRACE_SCREENSHOTS="$PWD/docs/screenshots" cargo test -p rltrace --test ui every_page_in_a_real_browser
ls -l docs/screenshots/*.png
