#!/usr/bin/env bash
# Installs what is needed, builds Flotilla and starts the desktop app.
# The inventory lives in ~/.local/share/flotilla unless FLOTILLA_DATA_DIR says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
printf '\033[1m==> Building Flotilla\033[0m\n'
npm run build --silent
cargo build -p flotilla --bin flotilla --bin flotillactl
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "No display found: start Flotilla from a desktop session, or under a virtual one with" >&2
  echo "  xvfb-run -a target/debug/flotilla" >&2
  exit 1
fi
printf '\033[1m==> Starting Flotilla (command line: target/debug/flotillactl --help)\033[0m\n'
exec target/debug/flotilla
