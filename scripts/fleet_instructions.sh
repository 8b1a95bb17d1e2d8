#!/usr/bin/env bash
# Instructions per read in fleet mode, counted by callgrind (repeatable, unlike time): a
# first-level miss answered by the shared cache, and a first-level hit, of one replica. Runs
# benches/harness/fleet_instructions.rs with N and 2N reads per mode; (I(2N) - I(N)) / N is one
# read, setup cancelled out. Counts this process only: not redis-server, not the kernel.
#
#   scripts/fleet_instructions.sh [N]      (default N = 500)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }
cargo build --quiet --release --features redis --example fleet_instructions
bin="${CARGO_TARGET_DIR:-target}/release/examples/fleet_instructions"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # mode reads -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>"$out/log" >/dev/null
  grep -o 'Collected : [0-9]*' "$out/log" | awk '{print $3}' | sort -n | tail -1
}
for mode in hit shared; do
  one=$(count "$mode" "$n")
  two=$(count "$mode" $((2 * n)))
  printf '%-7s %8d instructions per read\n' "$mode" $(( (two - one) / n ))
done
