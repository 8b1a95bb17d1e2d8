#!/usr/bin/env bash
# Instructions per request on the cache-hit path, counted by callgrind (repeatable, unlike time).
# Runs benches/harness/hit_instructions.rs with N and 2N iterations per mode; (I(2N) - I(N)) / N is the
# cost of one request with every setup cost cancelled out.
#
#   scripts/hit_instructions.sh [N]      (default N = 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
source scripts/callgrind_harness.sh
count() { # mode iterations -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>"$out/log" >/dev/null
  grep -o 'Collected : [0-9]*' "$out/log" | awk '{print $3}' | sort -n | tail -1
}
declare -A per
for mode in bare bare_1KB 43B 1KB axum_bare axum_bare_1KB axum_noop axum_43B axum_1KB; do
  one=$(count "$mode" "$n")
  two=$(count "$mode" $((2 * n)))
  per[$mode]=$(( (two - one) / n ))
  printf '%-13s %7d instructions per request\n' "$mode" "${per[$mode]}"
done
printf 'guard overhead over a trivial service: 43B %d, 1KB %d instructions per request\n' \
  $(( per[43B] - per[bare] )) $(( per[1KB] - per[bare_1KB] ))
printf 'guard overhead over an axum router:    43B %d, 1KB %d instructions per request\n' \
  $(( per[axum_43B] - per[axum_bare] )) $(( per[axum_1KB] - per[axum_bare_1KB] ))
printf '  of which any route layer costs (axum_noop - axum_bare): %d\n' $(( per[axum_noop] - per[axum_bare] ))
