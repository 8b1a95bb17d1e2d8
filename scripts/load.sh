#!/usr/bin/env bash
# Load benchmark: one server process pinned to core 0, wrk pinned to core 1, loopback only,
# bounded duration. Prints requests/s, p50/p99 latency and each mode's ratio to the bare router,
# measured in A-B-B-A blocks (baseline, mode, mode, baseline) so drift cancels out.
# About rounds x 5 modes x 4 runs x seconds: 5 min with the defaults (--rounds 5 --seconds 3).
#
#   scripts/load.sh [--rounds N] [--seconds S] [--connections C]
#
# Installs wrk (Debian package) if it is missing. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --example load_server --quiet
exec python3 scripts/load.py "$@"
