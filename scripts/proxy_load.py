"""The proxy load benchmark: smart-guard proxy against nginx and Apache + mod_auth_openidc in front
of the same upstream; see scripts/proxy_load.sh. Not part of CI.

Everything runs on loopback ports picked here, with configuration, pid and log files in a temp
directory: never the system's nginx or Apache sites. All servers (the upstream, the proxies, the
development AS and its TLS front) are pinned to core 0, wrk to core 1.
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
import urllib.request

import wrk_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMART_GUARD = os.path.join(ROOT, "target", "release", "smart-guard")
# The floor: a reverse proxy on the same hyper stack that does nothing else (benches/harness).
BARE_FORWARD = os.path.join(ROOT, "target", "release", "examples", "bare_forward")
SERVER_CORE, LOAD_CORE = "0", "1"
SECRET = "bench-secret"
PATIENT = json.dumps({
    "resourceType": "Patient", "id": "1", "meta": {"versionId": "1", "lastUpdated": "2026-11-30T00:00:00Z"},
    "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
    "active": True, "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
    "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work"}],
    "gender": "male", "birthDate": "1974-12-25",
    "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille", "state": "Vic",
                 "postalCode": "3999"}],
}, separators=(",", ":"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd):
    return ["taskset", "-c", SERVER_CORE] + cmd


def tree_usage(pid):
    """(user s, system s, context switches) of a process (all its threads) and its live descendants."""
    user = system = switches = 0.0
    stack = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while stack:
        p = stack.pop()
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
        for task in tasks:
            try:
                for line in open(f"/proc/{p}/task/{task}/status"):
                    if "ctxt_switches" in line:
                        switches += int(line.split()[1])
                stack += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
            except FileNotFoundError:
                pass
    return user, system, switches


def wait_http(url, expect=None, timeout=20, headers=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            if expect is not None and e.code == expect:
                return e.code, e.read()
            last = e
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {last}")


def status_of(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Servers:
    """Starts processes in their own process groups and stops them all (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp):
        self.tmp, self.procs = tmp, {}

    def start(self, name, cmd, env=None, stdout=None):
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        p = subprocess.Popen(pinned(cmd), stdout=stdout or log, stderr=log, env=env,
                             start_new_session=True, text=True)
        self.procs[name] = p
        return p

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def stop_all(self):
        for name in list(self.procs)[::-1]:
            self.stop(name)


def nginx_conf(tmp, name, server_blocks, extra_http=""):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    conf = f"""daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {extra_http}
    {server_blocks}
}}
"""
    path = os.path.join(d, "nginx.conf")
    open(path, "w").write(conf)
    return path


def apache_conf(tmp, name, port, upstream_port, introspection_url, interval):
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "run"), exist_ok=True)
    os.chmod(d, 0o755)
    os.chmod(os.path.join(d, "run"), 0o777)
    mods = "/usr/lib/apache2/modules"
    interval_line = f"OIDCOAuthTokenIntrospectionInterval {interval}" if interval else ""
    conf = f"""ServerRoot {d}
DefaultRuntimeDir {d}/run
PidFile {d}/apache.pid
Mutex file:{d}/run default
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
User www-data
Group www-data
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authn_core_module {mods}/mod_authn_core.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authz_user_module {mods}/mod_authz_user.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_http_module {mods}/mod_proxy_http.so
LoadModule auth_openidc_module {mods}/mod_auth_openidc.so
ErrorLog {d}/error.log
LogLevel warn
# One process with enough threads for every connection (one core: more processes only cost).
StartServers 1
ServerLimit 1
ThreadLimit 64
ThreadsPerChild 64
MinSpareThreads 1
MaxSpareThreads 64
MaxRequestWorkers 64
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 120

OIDCCryptoPassphrase bench-passphrase-not-a-secret
OIDCRedirectURI http://127.0.0.1:{port}/redirect_uri
OIDCCacheType shm
OIDCOAuthIntrospectionEndpoint {introspection_url}
OIDCOAuthIntrospectionEndpointAuth client_secret_basic
OIDCOAuthClientID fhir-server
OIDCOAuthClientSecret {SECRET}
OIDCOAuthSSLValidateServer Off
{interval_line}

<Location /fhir>
    AuthType oauth20
    Require valid-user
</Location>
ProxyPass /fhir http://127.0.0.1:{upstream_port}/fhir
"""
    path = os.path.join(d, "apache2.conf")
    open(path, "w").write(conf)
    return path


parse_wrk = wrk_output.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--expiry-ttl", type=int, default=2, help="cache TTL of the expiry case (s)")
    ap.add_argument("--expiry-seconds", type=int, default=10, help="length of the expiry case run (s)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    in_temp_dir("proxy_load.", args.keep, lambda tmp, servers: run(args, tmp, servers))


def in_temp_dir(prefix, keep, body):
    """Runs body(tmp, servers) in a fresh temp dir, then stops every server and removes the dir
    (unless keep)."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)
    servers = Servers(tmp)
    try:
        body(tmp, servers)
    finally:
        servers.stop_all()
        if keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def start_upstream(servers, tmp, port):
    """The upstream: nginx answering a fixed Patient at /fhir/Patient/1 on `port`; the same for
    every mode."""
    conf = nginx_conf(tmp, "upstream", f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /fhir/Patient/1 {{
            default_type application/fhir+json;
            return 200 '{PATIENT}';
        }}
        location / {{ return 404; }}
    }}""")
    servers.start("upstream", ["nginx", "-c", conf, "-p", os.path.dirname(conf)])


def run(args, tmp, servers):
    port = {k: free_port() for k in ["upstream", "nginx", "nginx_fields", "guard", "apache", "as", "as_http",
                                      "as_https", "guard_short", "apache_short", "bare"]}
    log = lambda *a: print(*a, file=sys.stderr, flush=True)

    start_upstream(servers, tmp, port["upstream"])

    def start_nginx_proxy(name, listen_port, directives=""):
        """nginx as a reverse proxy to the upstream, on kept-alive connections."""
        conf = nginx_conf(tmp, name, f"""
    upstream fhir {{ server 127.0.0.1:{port['upstream']}; keepalive 64; keepalive_requests 100000000; }}
    server {{
        listen 127.0.0.1:{listen_port} backlog=4096;
        location /fhir/ {{
            proxy_pass http://fhir;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {directives}
        }}
    }}""")
        servers.start(name, ["nginx", "-c", conf, "-p", os.path.dirname(conf)])

    # nginx as a plain reverse proxy.
    start_nginx_proxy("nginx", port["nginx"])
    # The same nginx sending the upstream the fields smart-guard sets (the forwarding and
    # identity fields, here with the benchmark token's values written in): the same work for the
    # upstream, which shares the core, so the two proxies differ by their own cost only.
    start_nginx_proxy("nginx_fields", port["nginx_fields"], f"""
            proxy_set_header Host 127.0.0.1:{port['upstream']};
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Smart-Client-Id bench-backend;
            proxy_set_header X-Smart-Scopes system/Patient.rs;
            proxy_set_header X-Smart-Interaction read;""")

    # The development AS, and nginx in front of its /introspect: over http for smart-guard, over
    # https (self-signed) for mod_auth_openidc, which accepts only an https introspection URL.
    # Its access log counts the introspection calls of both, with timestamps.
    keys = os.path.join(tmp, "keys", "backend")
    subprocess.run([SMART_GUARD, "keygen", "--alg", "ES384", "--out", keys], check=True, capture_output=True)
    clients = {"token_lifetime_secs": 86400,
               "clients": [{"client_id": "bench-backend", "scope": "system/Patient.rs system/Observation.rs",
                            "jwks_file": "keys/backend/jwks.json"}],
               "resource_servers": [{"client_id": "fhir-server", "client_secret": SECRET}]}
    open(os.path.join(tmp, "clients.json"), "w").write(json.dumps(clients))
    servers.start("as", [SMART_GUARD, "dev-server", "--clients", os.path.join(tmp, "clients.json"),
                         "--addr", f"127.0.0.1:{port['as']}"])
    wait_http(f"http://127.0.0.1:{port['as']}/.well-known/smart-configuration")
    front = os.path.join(tmp, "as_front")
    os.makedirs(front, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", f"{front}/key.pem",
                    "-out", f"{front}/cert.pem"], check=True, capture_output=True)
    introspect_log = os.path.join(front, "introspect.log")
    as_front_conf = nginx_conf(tmp, "as_front", f"""
    log_format calls '$msec $remote_addr $server_port $request $status';
    upstream as {{ server 127.0.0.1:{port['as']}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port['as_http']};
        listen 127.0.0.1:{port['as_https']} ssl;
        ssl_certificate {front}/cert.pem;
        ssl_certificate_key {front}/key.pem;
        location = /introspect {{
            access_log {introspect_log} calls;
            proxy_pass http://as;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""")
    servers.start("as_front", ["nginx", "-c", as_front_conf, "-p", front])

    token = subprocess.run([SMART_GUARD, "token", "--token-url", f"http://127.0.0.1:{port['as']}/token",
                            "--client-id", "bench-backend", "--key", os.path.join(keys, "private-key.pem"),
                            "--scope", "system/Patient.rs", "--token-only"],
                           check=True, capture_output=True, text=True).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    log(f"token: {len(token)} bytes")

    def start_guard(name, listen_port, ttl):
        env = dict(os.environ)
        env.update({
            "SMART_GUARD_UPSTREAM_URL": f"http://127.0.0.1:{port['upstream']}/fhir",
            "SMART_GUARD_LISTEN_ADDR": f"127.0.0.1:{listen_port}",
            "SMART_GUARD_BASE_PATH": "/fhir",
            "SMART_GUARD_INTROSPECTION_URL": f"http://127.0.0.1:{port['as_http']}/introspect",
            "SMART_GUARD_CLIENT_ID": "fhir-server",
            "SMART_GUARD_CLIENT_SECRET": SECRET,
            "SMART_GUARD_CACHE_MAX_TTL_SECS": str(ttl),
            "RUST_LOG": "warn",
        })
        p = servers.start(name, [SMART_GUARD, "proxy"], env=env, stdout=subprocess.PIPE)
        ready = json.loads(p.stdout.readline())
        log(f"{name}: {ready}")
        return p

    start_guard("guard", port["guard"], 86400)
    bare = servers.start("bare", [BARE_FORWARD, f"127.0.0.1:{port['bare']}", f"127.0.0.1:{port['upstream']}"],
                         stdout=subprocess.PIPE)
    log(f"bare: {json.loads(bare.stdout.readline())}")
    apache_main = apache_conf(tmp, "apache", port["apache"], port["upstream"],
                              f"https://127.0.0.1:{port['as_https']}/introspect", None)
    servers.start("apache", ["apache2", "-f", apache_main, "-DFOREGROUND"])

    url = {
        "upstream": f"http://127.0.0.1:{port['upstream']}/fhir/Patient/1",
        "nginx": f"http://127.0.0.1:{port['nginx']}/fhir/Patient/1",
        "smart-guard": f"http://127.0.0.1:{port['guard']}/fhir/Patient/1",
        "apache": f"http://127.0.0.1:{port['apache']}/fhir/Patient/1",
        "hyper-forward": f"http://127.0.0.1:{port['bare']}/fhir/Patient/1",
        "nginx-fields": f"http://127.0.0.1:{port['nginx_fields']}/fhir/Patient/1",
    }
    pid = {"upstream": servers.procs["upstream"].pid, "nginx": servers.procs["nginx"].pid,
           "smart-guard": servers.procs["guard"].pid, "apache": servers.procs["apache"].pid,
           "hyper-forward": servers.procs["bare"].pid, "nginx-fields": servers.procs["nginx_fields"].pid}

    # Checks before any timing: every mode answers the Patient; the two guards refuse a request
    # without a token (so they do authorize) and warm their cache with one AS call.
    for mode, u in url.items():
        status, body = wait_http(u, headers=auth)
        assert status == 200 and json.loads(body)["resourceType"] == "Patient", (mode, status, body[:200])
    for mode in ["smart-guard", "apache"]:
        status, _ = status_of(url[mode])
        assert status == 401, f"{mode} answered {status} without a token"
        status, _ = status_of(url[mode], headers={"Authorization": "Bearer not-a-token"})
        assert status == 401, f"{mode} answered {status} to an unknown token"
    for mode in ["smart-guard", "apache"]:
        for _ in range(3):
            status_of(url[mode], headers=auth)

    def calls():
        if not os.path.exists(introspect_log):
            return []
        entries = []
        for line in open(introspect_log):
            f = line.split()
            entries.append((float(f[0]), int(f[2]), f[-1]))
        return entries

    def wrk(mode, seconds, conns):
        cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
               "-H", f"Authorization: Bearer {token}", url[mode]]
        procs = [pid[mode]] + ([pid["upstream"]] if mode != "upstream" else [])
        before = [tree_usage(p) for p in procs]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        after = [tree_usage(p) for p in procs]
        r = parse_wrk(out)
        n = max(r["requests"], 1)
        d = [[a - b for a, b in zip(x, y)] for x, y in zip(after, before)]
        r["cpu_us"] = (d[0][0] + d[0][1]) * 1e6 / n
        r["user_us"] = d[0][0] * 1e6 / n
        r["switches"] = d[0][2] / n
        r["cpu_total_us"] = sum(x[0] + x[1] for x in d) * 1e6 / n
        return r

    calls_before = len(calls())
    log(f"warm: {calls_before} introspection calls so far (expect 4: per guard, the unknown token and the warm-up)")

    # Pairs measured A-B-B-A, so each ratio compares runs seconds apart: nginx against the
    # upstream alone, smart-guard against nginx, Apache + mod_auth_openidc against smart-guard.
    pairs = [("upstream", "nginx"), ("nginx", "smart-guard"), ("smart-guard", "apache"),
             ("nginx", "hyper-forward"), ("hyper-forward", "smart-guard"), ("nginx", "nginx-fields"),
             ("nginx-fields", "smart-guard")]
    results = {m: [] for m in url}
    ratios = {p: [] for p in pairs}
    p99_ratios = {p: [] for p in pairs}
    cpu_ratios = {p: [] for p in pairs}
    load = []
    for r in range(args.rounds):
        order = pairs[r % len(pairs):] + pairs[:r % len(pairs)]
        for a, b in order:
            load.append(os.getloadavg()[0])
            ra1, rb1, rb2, ra2 = (wrk(a, args.seconds, args.connections), wrk(b, args.seconds, args.connections),
                                  wrk(b, args.seconds, args.connections), wrk(a, args.seconds, args.connections))
            for m, x in [(a, ra1), (b, rb1), (b, rb2), (a, ra2)]:
                results[m].append(x)
            ratios[(a, b)].append((rb1["rps"] + rb2["rps"]) / (ra1["rps"] + ra2["rps"]))
            p99_ratios[(a, b)].append((rb1["p99"] + rb2["p99"]) / (ra1["p99"] + ra2["p99"]))
            cpu_ratios[(a, b)].append((rb1["cpu_us"] + rb2["cpu_us"]) / (ra1["cpu_us"] + ra2["cpu_us"]))
            log(f"round {r + 1} {b:>11} / {a:<11} req/s {(rb1['rps'] + rb2['rps']) / 2:8.0f} / "
                f"{(ra1['rps'] + ra2['rps']) / 2:8.0f} = {ratios[(a, b)][-1]:.3f}   p99 ratio "
                f"{p99_ratios[(a, b)][-1]:.2f}   cpu/req {(rb1['cpu_us'] + rb2['cpu_us']) / 2:6.1f} / "
                f"{(ra1['cpu_us'] + ra2['cpu_us']) / 2:6.1f} us")
    hit_calls = len(calls()) - calls_before

    # The expiry case: a short cache TTL for both guards, a run of --expiry-seconds under the same
    # connections, and the introspection calls grouped into bursts (one burst per expiry).
    servers.stop("guard")
    servers.stop("apache")
    start_guard("guard_short", port["guard_short"], args.expiry_ttl)
    apache_short = apache_conf(tmp, "apache_short", port["apache_short"], port["upstream"],
                               f"https://127.0.0.1:{port['as_https']}/introspect", args.expiry_ttl)
    servers.start("apache_short", ["apache2", "-f", apache_short, "-DFOREGROUND"])
    url["smart-guard"] = f"http://127.0.0.1:{port['guard_short']}/fhir/Patient/1"
    url["apache"] = f"http://127.0.0.1:{port['apache_short']}/fhir/Patient/1"
    pid["smart-guard"], pid["apache"] = servers.procs["guard_short"].pid, servers.procs["apache_short"].pid
    expiry = {}
    for mode in ["smart-guard", "apache"]:
        wait_http(url[mode], headers=auth)
        time.sleep(args.expiry_ttl + 1)  # start the run with an expired entry
        start = time.time()
        r = wrk(mode, args.expiry_seconds, args.connections)
        end = time.time()
        entries = [e for e in calls() if start <= e[0] <= end]
        bursts = []
        for t, _, status in entries:
            if bursts and t - bursts[-1][-1] < 0.5:
                bursts[-1].append(t)
            else:
                bursts.append([t])
        statuses = sorted({e[2] for e in entries})
        expiry[mode] = {"calls": len(entries), "bursts": len(bursts), "sizes": [len(b) for b in bursts],
                        "statuses": statuses, "wrk": r}
        log(f"expiry {mode}: {len(entries)} AS calls in {len(bursts)} bursts {[len(b) for b in bursts]} "
            f"over {end - start:.1f} s; {r['rps']:.0f} req/s, p99 {r['p99']:.0f} us, non-2xx {r['non2xx']}")

    report(args, results, ratios, p99_ratios, cpu_ratios, hit_calls, expiry, load, token)
    for name in ["as_front", "upstream", "nginx", "guard_short", "apache_short"]:
        errs = [l for l in open(os.path.join(tmp, f"{name}.log")) if "error" in l.lower() or "warn" in l.lower()]
        if errs:
            log(f"{name} log ({len(errs)} warning/error lines), first: {errs[0].rstrip()}")


def report(args, results, ratios, p99_ratios, cpu_ratios, hit_calls, expiry, load, token):
    med = statistics.median
    print(f"\n{args.rounds} rounds of A-B-B-A blocks x {args.seconds} s, {args.connections} connections, "
          f"all servers on core {SERVER_CORE}, wrk on core {LOAD_CORE}; {len(token)}-byte token; "
          f"load average at block starts {min(load):.2f}-{max(load):.2f}")
    print(f"\n| Mode | req/s (median) | spread | p50 | p99 | server cpu µs/req (user) | with upstream µs/req "
          f"| context switches/req | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    names = {"upstream": "upstream alone (nginx, fixed Patient)", "nginx": "nginx reverse proxy",
             "smart-guard": "**smart-guard proxy, cache hit**", "apache": "Apache + mod_auth_openidc, cache hit",
             "hyper-forward": "bare forwarder alone (the proxy's hyper server, upstream pool and allocator; no guard; benches/harness/bare_forward.rs)",
             "nginx-fields": "nginx reverse proxy sending smart-guard's forwarding and identity fields"}
    for m, rs in results.items():
        rps = [x["rps"] for x in rs]
        cpu = med(x["cpu_us"] for x in rs)
        print(f"| {names[m]} | {med(rps):,.0f} | {min(rps):,.0f}-{max(rps):,.0f} | {med(x['p50'] for x in rs):,.0f} µs "
              f"| {med(x['p99'] for x in rs):,.0f} µs | {cpu:.1f} ({med(x['user_us'] for x in rs):.1f}) "
              f"| {med(x['cpu_total_us'] for x in rs):.1f} | {med(x['switches'] for x in rs):.2f} "
              f"| {sum(x['non2xx'] for x in rs)} "
              f"| {sum(x['socket_errors'] for x in rs)} |")
    print("\n| Ratio (A-B-B-A blocks) | req/s median | spread | p99 ratio median (spread) | proxy cpu/req ratio |")
    print("|---|---|---|---|---|")
    for (a, b), rs in ratios.items():
        p = p99_ratios[(a, b)]
        c = cpu_ratios[(a, b)]
        print(f"| {b} / {a} | {med(rs):.3f} | {min(rs):.3f}-{max(rs):.3f} | {med(p):.2f} ({min(p):.2f}-{max(p):.2f}) "
              f"| {med(c):.2f} |")
    sa = [1 / x for x in ratios[("smart-guard", "apache")]]
    print(f"| smart-guard / apache | {med(sa):.2f}x | {min(sa):.2f}-{max(sa):.2f}x | | |")
    nu = ratios[("upstream", "nginx")]
    sn = ratios[("nginx", "smart-guard")]
    print(f"| smart-guard / upstream (product of the two ratios) | {med(nu) * med(sn):.3f} | | | |")
    print(f"\nAS calls during the cache-hit rounds: {hit_calls} (expect 0: both caches warmed before)")
    print(f"\nExpiry case: cache TTL {args.expiry_ttl} s (smart-guard SMART_GUARD_CACHE_MAX_TTL_SECS, "
          f"mod_auth_openidc OIDCOAuthTokenIntrospectionInterval), {args.expiry_seconds} s run, "
          f"{args.connections} connections, one token")
    print("\n| Mode | AS calls | expiries (bursts) | AS calls per expiry | burst sizes | req/s | p99 | non-2xx |")
    print("|---|---|---|---|---|---|---|---|")
    for m, e in expiry.items():
        per = e["calls"] / e["bursts"] if e["bursts"] else float("nan")
        print(f"| {m} | {e['calls']} | {e['bursts']} | {per:.1f} | {' '.join(map(str, e['sizes']))} "
              f"| {e['wrk']['rps']:,.0f} | {e['wrk']['p99']:,.0f} µs | {e['wrk']['non2xx']} |")


if __name__ == "__main__":
    main()
