#!/usr/bin/env bash
# Smoke test for the loopback FHIR upstream (server.mjs). Needs: node, curl. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")"

[ -d node_modules/@medplum/fhir-router ] || npm ci --no-audit --no-fund >&2

TMP=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

PASS=0
fail() {
  echo "FAIL: $*" >&2
  echo "--- last body:" >&2; head -c 2000 "$TMP/body" >&2 2>/dev/null || true; echo >&2
  echo "--- server stderr:" >&2; tail -n 20 "$TMP/err" >&2 || true
  exit 1
}
ok() { PASS=$((PASS + 1)); echo "ok   $*"; }

# ---- start -------------------------------------------------------------------------------------
T0=$(date +%s%N)
node server.mjs --port 0 --base /fhir >"$TMP/out" 2>"$TMP/err" &
PID=$!
for _ in $(seq 1 300); do
  [ -s "$TMP/out" ] && break
  kill -0 "$PID" 2>/dev/null || fail "server exited during startup"
  sleep 0.05
done
[ -s "$TMP/out" ] || fail "server did not print its ready line within 15 s"
LINE=$(head -n 1 "$TMP/out")
PORT=$(node -e 'const j=JSON.parse(process.argv[1]); if (j.base !== "/fhir" || !(j.port > 0)) process.exit(1); console.log(j.port)' "$LINE") ||
  fail "bad ready line: $LINE"
echo "ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms: $LINE"
ROOT="http://127.0.0.1:$PORT"
B="$ROOT/fhir"
FJ='content-type: application/fhir+json'

# req METHOD URL [curl args...]  -> body in $TMP/body, headers in $TMP/hdr, status in $S
req() {
  local m=$1 u=$2; shift 2
  S=$(curl -sS -X "$m" -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' "$@" "$u") || fail "curl $m $u"
}
expect_status() { [ "$S" = "$1" ] || fail "$2: expected HTTP $1, got $S"; }
# js EXPR MSG: EXPR sees the parsed response body as b, the server base as B.
js() {
  node -e '
    const fs = require("fs");
    const b = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const B = process.argv[2];
    if (!(eval(process.argv[3]))) process.exit(1);
  ' "$TMP/body" "$B" "$1" || fail "$2 [$1]"
}
header() { grep -i "^$1:" "$TMP/hdr" | head -n 1 | cut -d' ' -f2- | tr -d '\r'; }

# ---- capability / routing ----------------------------------------------------------------------
req GET "$B/metadata"; expect_status 200 metadata
js 'b.resourceType === "CapabilityStatement" && b.implementation.url === B && b.rest[0].resource.length > 100' "metadata body"
ok "metadata"

req GET "$B/__log"; expect_status 404 "control route must not be reachable under the base"
req GET "$ROOT/nothere/Patient"; expect_status 404 "outside the base"
ok "control routes not under base; outside base is 404"

# ---- read / create / vread ---------------------------------------------------------------------
req GET "$B/Patient/pat-1"; expect_status 200 "read seed"
js 'b.id === "pat-1" && b.meta.versionId' "read body"
[ -n "$(header etag)" ] && [ -n "$(header last-modified)" ] || fail "read: ETag/Last-Modified missing"
ok "read Patient/pat-1 (+ETag, Last-Modified)"

req POST "$B/Patient" -H "$FJ" -d '{"resourceType":"Patient","name":[{"family":"Smoke","given":["Test"]}],"identifier":[{"system":"urn:smoke","value":"s1"}]}'
expect_status 201 create
LOC=$(header location)
case "$LOC" in "$B"/Patient/*/_history/*) ;; *) fail "create: Location '$LOC' not $B/Patient/{id}/_history/{vid}" ;; esac
NEWID=$(node -e 'console.log(process.argv[1].split("/").at(-3))' "$LOC")
js "b.id === '$NEWID'" "create body id matches Location"
req GET "$LOC"; expect_status 200 "vread via Location"
req GET "$B/Patient/$NEWID"; expect_status 200 "read created"
js 'b.name[0].family === "Smoke"' "read created body"
ok "create (201, Location $LOC) + read + vread"

# ---- conditional create ------------------------------------------------------------------------
req POST "$B/Patient" -H "$FJ" -H 'If-None-Exist: identifier=urn:smoke|s1' -d '{"resourceType":"Patient","name":[{"family":"Dup"}]}'
expect_status 200 "conditional create, match"
js "b.id === '$NEWID' && b.name[0].family === 'Smoke'" "conditional create returned existing"
req POST "$B/Patient" -H "$FJ" -H 'If-None-Exist: identifier=urn:smoke|s2' -d '{"resourceType":"Patient","identifier":[{"system":"urn:smoke","value":"s2"}]}'
expect_status 201 "conditional create, no match"
ok "conditional create (match -> 200 existing, no match -> 201)"

# ---- update / conditional update / patch -------------------------------------------------------
VID=$(node -e 'console.log(process.argv[1].split("/").at(-1))' "$LOC")
req PUT "$B/Patient/$NEWID" -H "$FJ" -H "If-Match: W/\"$VID\"" -d "{\"resourceType\":\"Patient\",\"id\":\"$NEWID\",\"active\":true,\"identifier\":[{\"system\":\"urn:smoke\",\"value\":\"s1\"}]}"
expect_status 200 update
[ -n "$(header content-location)" ] || fail "update: Content-Location missing"
req PUT "$B/Patient/$NEWID" -H "$FJ" -H 'If-Match: W/"stale"' -d "{\"resourceType\":\"Patient\",\"id\":\"$NEWID\"}"
expect_status 412 "update with stale If-Match"
req PUT "$B/Patient?identifier=urn:smoke|s1" -H "$FJ" -d '{"resourceType":"Patient","active":false,"identifier":[{"system":"urn:smoke","value":"s1"}]}'
expect_status 200 "conditional update"
js "b.id === '$NEWID' && b.active === false" "conditional update hit the same resource"
req PATCH "$B/Patient/$NEWID" -H 'content-type: application/json-patch+json' -d '[{"op":"add","path":"/gender","value":"other"}]'
expect_status 200 patch
js 'b.gender === "other"' "patch applied"
ok "update (+If-Match 412), conditional update, JSON patch"

# ---- search ------------------------------------------------------------------------------------
req GET "$B/Patient?_id=pat-1&_include=Patient:general-practitioner&_revinclude=Observation:subject"
expect_status 200 "search with _include/_revinclude"
js 'b.type === "searchset" && b.total === 1 && b.link.find(l => l.relation === "self").url.startsWith(B + "/Patient?")' "searchset self link"
js 'b.entry.every(e => e.fullUrl === B + "/" + e.resource.resourceType + "/" + e.resource.id)' "fullUrl uses upstream base"
js 'b.entry.some(e => e.resource.resourceType === "Practitioner" && e.search.mode === "include")' "_include Practitioner"
js 'b.entry.filter(e => e.resource.resourceType === "Observation" && e.search.mode === "include").length === 2' "_revinclude Observations"
ok "search with _include + _revinclude"

req GET "$B/Patient?_count=1"; expect_status 200 "paged search"
js 'b.entry.length === 1 && b.link.find(l => l.relation === "next").url.startsWith(B + "/Patient?") ' "next link"
NEXT=$(node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log(b.link.find(l=>l.relation==="next").url)' "$TMP/body")
req GET "$NEXT"; expect_status 200 "follow next"
js 'b.entry.length === 1 && b.link.some(l => l.relation === "previous")' "page 2"
ok "paging (self/next/previous)"

req POST "$B/Observation/_search" -H 'content-type: application/x-www-form-urlencoded' -d 'subject=Patient/pat-1&_include=Observation:encounter'
expect_status 200 "POST _search"
js 'b.total === 2 && b.entry.some(e => e.resource.resourceType === "Encounter")' "POST _search results"
ok "search via POST _search (form body)"

# ---- batch / transaction -----------------------------------------------------------------------
req POST "$B" -H "$FJ" -d '{"resourceType":"Bundle","type":"batch","entry":[
  {"request":{"method":"GET","url":"Patient/pat-2"}},
  {"request":{"method":"GET","url":"Patient/does-not-exist"}},
  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"b"},"subject":{"reference":"Patient/pat-2"}},"request":{"method":"POST","url":"Observation"}}]}'
expect_status 200 batch
js 'b.type === "batch-response" && b.entry[0].response.status === "200" && b.entry[1].response.status === "404" && b.entry[2].response.status === "201"' "batch statuses"
js 'b.entry[2].response.location.startsWith(B + "/Observation/") && b.entry[2].fullUrl.startsWith(B + "/")' "batch absolute URLs"
ok "batch"

req POST "$B" -H "$FJ" -d '{"resourceType":"Bundle","type":"transaction","entry":[
  {"fullUrl":"urn:uuid:6a0b4f5e-1c1d-4e0e-9a64-2a4c7d1b0001","resource":{"resourceType":"Patient","name":[{"family":"TxSmoke"}]},"request":{"method":"POST","url":"Patient"}},
  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"t"},"subject":{"reference":"urn:uuid:6a0b4f5e-1c1d-4e0e-9a64-2a4c7d1b0001"}},"request":{"method":"POST","url":"Observation"}}]}'
expect_status 200 transaction
js 'b.type === "transaction-response" && b.entry.every(e => e.response.status === "201" && e.response.location.startsWith(B + "/"))' "transaction statuses"
js 'b.entry[1].resource.subject.reference === "Patient/" + b.entry[0].resource.id' "urn:uuid reference rewritten"
req POST "$B" -H "$FJ" -d '{"resourceType":"Bundle","type":"transaction","entry":[
  {"resource":{"resourceType":"Patient","name":[{"family":"MustRollBack"}]},"request":{"method":"POST","url":"Patient"}},
  {"request":{"method":"GET","url":"Patient/does-not-exist"}}]}'
expect_status 404 "failing transaction"
req GET "$B/Patient?family=MustRollBack"; expect_status 200 "search after rollback"
js 'b.total === 0' "failed transaction rolled back"
ok "transaction (urn:uuid rewrite, absolute locations, rollback on failure)"

# ---- delete / history --------------------------------------------------------------------------
req DELETE "$B/Observation/obs-3"; expect_status 200 delete
req GET "$B/Observation/obs-3"; expect_status 410 "read after delete"
ok "delete (+410 Gone)"

req GET "$B/Patient/$NEWID/_history"; expect_status 200 "instance history"
js 'b.type === "history" && b.entry.length === 4 && b.entry[0].resource.gender === "other" && b.entry.every(e => e.fullUrl.startsWith(B + "/"))' "instance history newest first"
req GET "$B/Observation/obs-3/_history"; expect_status 200 "history of deleted"
js 'b.entry[0].request.method === "DELETE"' "history shows the delete"
req GET "$B/Patient/_history"; expect_status 200 "type history"
js 'b.type === "history" && b.entry.every(e => e.fullUrl.startsWith(B + "/Patient/"))' "type history"
req GET "$B/_history?_count=5"; expect_status 200 "system history"
js 'b.entry.length === 5 && b.link.some(l => l.relation === "next" && l.url.startsWith(B + "/_history?"))' "system history paging"
ok "history (instance, type, system)"

# ---- hooks -------------------------------------------------------------------------------------
N=5000000
curl -sS -o "$TMP/dl.bin" -D "$TMP/hdr" "$B/Binary/huge-$N" || fail "huge download"
grep -qi '^transfer-encoding: chunked' "$TMP/hdr" || fail "huge download not chunked"
node -e '
  const fs = require("fs"), c = require("crypto");
  const n = +process.argv[2], h = c.createHash("sha256"), buf = Buffer.alloc(251 * 256);
  for (let i = 0; i < buf.length; i++) buf[i] = i % 251;
  for (let s = 0; s < n; s += buf.length) h.update(buf.subarray(0, Math.min(buf.length, n - s)));
  const got = c.createHash("sha256").update(fs.readFileSync(process.argv[1])).digest("hex");
  if (fs.statSync(process.argv[1]).size !== n || got !== h.digest("hex")) process.exit(1);
' "$TMP/dl.bin" "$N" || fail "huge download content"
ok "huge download ($N bytes, chunked, pattern verified)"

head -c 3000000 /dev/urandom >"$TMP/up.bin"
SHA=$(node -e 'console.log(require("crypto").createHash("sha256").update(require("fs").readFileSync(process.argv[1])).digest("hex"))' "$TMP/up.bin")
req POST "$B/Binary" -H 'content-type: application/octet-stream' --data-binary @"$TMP/up.bin"
expect_status 201 "huge upload"
js "b.resourceType === 'Binary' && b.size === 3000000 && b.sha256 === '$SHA'" "huge upload size/sha256"
ok "huge upload (3 MB, sha256 matches)"

T1=$(date +%s%N)
req GET "$B/Patient/pat-1" -H 'x-upstream-delay-ms: 400'; expect_status 200 "delayed read"
MS=$(( ($(date +%s%N) - T1) / 1000000 ))
[ "$MS" -ge 400 ] || fail "delay hook: answered after $MS ms"
ok "x-upstream-delay-ms (answered after $MS ms)"

set +e
curl -sS -o /dev/null -m 1 -H 'x-upstream-hang: 1' "$B/Patient/pat-1" 2>/dev/null
RC=$?
set -e
[ "$RC" = 28 ] || fail "hang hook: curl exit $RC (expected 28 = timeout)"
ok "x-upstream-hang (client timed out)"

# ---- recording ---------------------------------------------------------------------------------
req GET "$ROOT/__log"; expect_status 200 "__log"
js 'Array.isArray(b) && b.every(r => r.seq && r.method && r.path && r.headers && typeof r.body_length === "number")' "log shape"
js 'b.some(r => r.method === "GET" && r.path === "/fhir/Patient/pat-1" && r.types.join() === "Patient" && r.headers["user-agent"])' "read recorded"
js 'b.some(r => r.path.startsWith("/fhir/Patient?_id=pat-1&_include") && ["Observation","Patient","Practitioner"].every(t => r.reads.includes(t)))' "include/revinclude types recorded"
js 'b.some(r => r.interaction === "batch" && r.writes.includes("Observation") && r.reads.includes("Patient"))' "batch entry types recorded"
js 'b.some(r => r.interaction === "transaction" && r.path === "/fhir" && r.writes.includes("Patient") && r.writes.includes("Observation"))' "transaction types recorded"
js 'b.some(r => r.method === "DELETE" && r.writes.join() === "Observation")' "delete recorded"
js 'b.some(r => r.hook === "huge-upload" && r.body_length === 3000000 && r.writes.includes("Binary"))' "upload hook recorded"
js 'b.some(r => r.hook === "huge-download" && r.response_length === 5000000)' "download hook recorded"
js 'b.some(r => r.hook === "delay" && r.headers["x-upstream-delay-ms"] === "400")' "delay hook recorded"
js 'b.some(r => r.hook === "hang" && r.complete === false)' "hang recorded"
js '!b.some(r => r.path.startsWith("/__"))' "control routes not logged"
req POST "$ROOT/__reset"; expect_status 200 "__reset"
req GET "$ROOT/__log"; js 'b.length === 0' "log cleared"
req GET "$B/Patient/$NEWID"; expect_status 200 "data survives reset"
ok "recording (/__log, /__reset)"

kill "$PID"
wait "$PID" 2>/dev/null || true
PID=
echo "smoke: all $PASS checks passed"
