#!/usr/bin/env bash
# Standalone smoke test of the README's manual steps: keys from `smart-guard keygen`, oidc-provider
# started by hand (as.mjs), wait for its discovery document, a token from `smart-guard token`,
# introspected by `smart-guard introspect`. The AS is stopped by its PID on every exit path.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --features cli --bin smart-guard
# Where cargo put it: CARGO_TARGET_DIR when set.
bin="${CARGO_TARGET_DIR:-target}/debug/smart-guard"
scratch=$(mktemp -d)
as_pid=""
cleanup() {
  if [ -n "$as_pid" ]; then
    kill "$as_pid" 2>/dev/null || true
    wait "$as_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

for key in backend-rs384:RS384 backend-es384:ES384 rs-jwt-rs384:RS384 rs-jwt-es384:ES384 rs-bearer:ES384; do
  "$bin" keygen --alg "${key#*:}" --out "$scratch/keys/${key%%:*}" >/dev/null 2>&1 ||
    { echo "smart-guard keygen failed for $key" >&2; exit 1; }
done

node tests/interop/as.mjs --keys "$scratch/keys" --port 0 >"$scratch/ready" 2>"$scratch/as.log" &
as_pid=$!
json() { node -e 'const v=JSON.parse(require("fs").readFileSync(0,"utf8")); console.log(process.argv[1].split(".").reduce((o,k)=>o[k],v))' "$1"; }
for _ in $(seq 100); do [ -s "$scratch/ready" ] && break; sleep 0.1; done
issuer=$(json issuer <"$scratch/ready")
for _ in $(seq 100); do
  if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' \
    "$issuer/.well-known/openid-configuration"; then break; fi
  sleep 0.1
done
node -e 'fetch(process.argv[1]).then(r=>r.json()).then(m=>{if(!m.introspection_endpoint)process.exit(1)})' \
  "$issuer/.well-known/openid-configuration"

token=$("$bin" token --token-url "$issuer/token" --client-id backend-es384 \
  --key "$scratch/keys/backend-es384/private-key.pem" --scope "system/Patient.rs" | json access_token)
# The token goes through stdin: out of the process list, and safe when it begins with `-`.
# `introspect` prints the answer as the guard reads it (`aud` is a list).
answer=$(printf '%s' "$token" | SMART_GUARD_CLIENT_SECRET='interop rs-s3cret:with&odd=chars' \
  "$bin" introspect --url "$issuer/token/introspection" --client-id rs-basic -)
[ "$(echo "$answer" | json active)" = "true" ] || { echo "not active: $answer" >&2; exit 1; }
[ "$(echo "$answer" | json aud.0)" = "https://fhir.interop.test/fhir" ] || { echo "wrong aud: $answer" >&2; exit 1; }
echo "oidc-provider at $issuer: token issued and introspected (active, aud ok)"
