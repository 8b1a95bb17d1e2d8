#!/usr/bin/env bash
# The cache-hit path's memory footprint per request, from callgrind (repeatable, unlike time):
#  - code: distinct 64-byte lines of machine code executed by the timed loop (one request's
#    worth, since every request takes the same path), from `--dump-instr=yes`;
#  - data: D1 misses per request when a 256 KiB pass evicts the L1 data cache before every
#    request (as a server's network stack does between two requests), N vs 2N requests.
# In a real server both are refetched from L2 on every request; see BENCHMARKS.md.
#
#   scripts/hit_footprint.sh [N]      (default N = 500)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}
source scripts/callgrind_harness.sh
code_lines() { # mode -> distinct code lines executed in the timed loop
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*timed_requests*' \
    --dump-instr=yes --callgrind-out-file="$out/code" "$bin" "$1" 20 2>/dev/null >/dev/null
  python3 scripts/code_lines.py "$out/code"
}
d1_misses() { # mode iterations -> D1 read and write misses of the timed loop
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*timed_requests*' \
    --cache-sim=yes --I1=32768,8,64 --D1=49152,12,64 --LL=2097152,16,64 \
    --callgrind-out-file="$out/data" "$bin" "$1" "$2" 256 2>/dev/null >/dev/null
  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  awk '/^totals:/ {print $6, $7}' "$out/data"
}
declare -A code data
printf '%-13s %11s %11s\n' mode code_lines data_lines
for mode in bare 43B bare_1KB 1KB axum_bare axum_bare_1KB axum_noop axum_43B axum_1KB; do
  code[$mode]=$(code_lines "$mode")
  read -r r1 w1 < <(d1_misses "$mode" "$n")
  read -r r2 w2 < <(d1_misses "$mode" $((2 * n)))
  data[$mode]=$(( (r2 + w2 - r1 - w1) / n - 256 * 1024 / 64 ))
  printf '%-13s %11d %11d\n' "$mode" "${code[$mode]}" "${data[$mode]}"
done
for pair in "43B bare" "1KB bare_1KB" "axum_43B axum_bare" "axum_1KB axum_bare_1KB" "axum_noop axum_bare"; do
  read -r a b <<<"$pair"
  printf '%-9s - %-13s code +%d lines (%d bytes), data +%d lines\n' "$a" "$b" \
    $(( code[$a] - code[$b] )) $(( (code[$a] - code[$b]) * 64 )) $(( data[$a] - data[$b] ))
done
