#!/usr/bin/env bash
# Instructions per forwarded request (callgrind): the smart-guard proxy on a cache hit beside the
# bare hyper-util forwarder, both in front of the same nginx upstream. See proxy_instructions.py.
#
#   scripts/proxy_instructions.sh [--seconds S] [--connections C] [--annotate] [--keep] [--dump-instr]
#                                  [--atomics]
#
# Needs valgrind, nginx, wrk and objdump (Debian packages). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind nginx wrk objdump; do
  command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --features cli --bin smart-guard --example bare_forward --quiet
exec python3 scripts/proxy_instructions.py "$@"
