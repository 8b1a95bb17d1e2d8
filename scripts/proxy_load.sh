#!/usr/bin/env bash
# Proxy load benchmark (not part of CI): the smart-guard proxy against nginx as a plain reverse
# proxy and against Apache httpd + mod_auth_openidc, all in front of the same upstream (nginx
# answering a fixed FHIR Patient), on a cache hit with the same token. All servers (upstream,
# proxies, the development AS and its TLS front) are pinned to core 0, wrk to core 1; loopback
# ports picked at run time; configs, pid files and logs in a temp dir (never the system's sites),
# everything stopped on exit. Measured in A-B-B-A blocks per pair (upstream/nginx,
# nginx/smart-guard, smart-guard/apache), rotated each round; then an expiry case (cache TTL 2 s
# for both guards, 10 s under the same connections) counts the AS calls per expiry.
# About rounds x 28 x seconds + 40 s: ~8 min with the defaults (--rounds 5 --seconds 3). A fifth
# mode, a bare forwarder on the same hyper server, upstream pool and allocator
# (benches/harness/bare_forward.rs), is the floor of the stack; a sixth, nginx sending the
# upstream the same forwarding and identity fields as smart-guard (nginx-fields), puts the same
# work on the upstream, which shares the core.
#
#   scripts/proxy_load.sh [--rounds N] [--seconds S] [--connections C] [--expiry-ttl S]
#                         [--expiry-seconds S] [--keep]
#
# Installs nginx, apache2, libapache2-mod-auth-openidc and wrk (Debian packages) if missing, and
# builds the `smart-guard` binary and the bare forwarder (release, `--features cli`) once. Needs
# root (Apache switches to www-data).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v apache2 >/dev/null || missing+=(apache2)
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || missing+=(libapache2-mod-auth-openidc)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  # The packages' own services are not wanted: nothing here uses the system's sites.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --features cli --bin smart-guard --example bare_forward --quiet
{
  echo "versions: $(nginx -v 2>&1); $(apache2 -v | head -1);" \
    "mod_auth_openidc $(dpkg-query -W -f '${Version}' libapache2-mod-auth-openidc);" \
    "$(wrk -v 2>&1 | head -1); smart-guard $(git rev-parse --short HEAD)"
} >&2
exec python3 scripts/proxy_load.py "$@"
