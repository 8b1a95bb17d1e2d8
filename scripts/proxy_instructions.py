"""Instructions per forwarded request, counted by callgrind: the smart-guard proxy (cache hit)
beside the bare forwarder (benches/harness/bare_forward.rs: the proxy's hyper server, upstream
pool and allocator, nothing else), in front of the same
nginx upstream. Repeatable where time is not (BENCHMARKS.md); user-space instructions only, so
the kernel's share (the same for both: the same sockets and syscalls) is left out.

Each server runs under `valgrind --tool=callgrind`; after a warm-up its counters are zeroed,
wrk runs for --seconds, the counters are dumped, and their total is divided by the requests wrk
completed. See scripts/proxy_instructions.sh. Not part of CI.
"""
import argparse, json, os, re, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import callgrind_atomics  # noqa: E402
import proxy_load  # noqa: E402
from proxy_load import BARE_FORWARD, SECRET, SMART_GUARD, free_port, wait_http  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--annotate", action="store_true", help="print callgrind_annotate's top functions")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (callgrind files, logs)")
    ap.add_argument("--dump-instr", action="store_true",
                    help="count per instruction too (callgrind --dump-instr=yes; with --keep, for callgrind_annotate)")
    ap.add_argument("--atomics", action="store_true",
                    help="also count atomic read-modify-write instructions per request (implies --dump-instr)")
    args = ap.parse_args()
    args.dump_instr = args.dump_instr or args.atomics
    proxy_load.in_temp_dir("proxy_instructions.", args.keep, lambda tmp, servers: run(args, tmp, servers))


def run(args, tmp, servers):
    port = {k: free_port() for k in ["upstream", "as", "guard", "bare"]}
    proxy_load.start_upstream(servers, tmp, port["upstream"])
    keys = os.path.join(tmp, "keys")
    subprocess.run([SMART_GUARD, "keygen", "--alg", "ES384", "--out", keys], check=True, capture_output=True)
    clients = {"token_lifetime_secs": 86400,
               "clients": [{"client_id": "bench-backend", "scope": "system/Patient.rs",
                            "jwks_file": "keys/jwks.json"}],
               "resource_servers": [{"client_id": "fhir-server", "client_secret": SECRET}]}
    open(os.path.join(tmp, "clients.json"), "w").write(json.dumps(clients))
    servers.start("as", [SMART_GUARD, "dev-server", "--clients", os.path.join(tmp, "clients.json"),
                         "--addr", f"127.0.0.1:{port['as']}"])
    wait_http(f"http://127.0.0.1:{port['as']}/.well-known/smart-configuration")
    token = subprocess.run([SMART_GUARD, "token", "--token-url", f"http://127.0.0.1:{port['as']}/token",
                            "--client-id", "bench-backend", "--key", os.path.join(keys, "private-key.pem"),
                            "--scope", "system/Patient.rs", "--token-only"],
                           check=True, capture_output=True, text=True).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    env = dict(os.environ)
    env.update({
        "SMART_GUARD_UPSTREAM_URL": f"http://127.0.0.1:{port['upstream']}/fhir",
        "SMART_GUARD_LISTEN_ADDR": f"127.0.0.1:{port['guard']}",
        "SMART_GUARD_BASE_PATH": "/fhir",
        "SMART_GUARD_INTROSPECTION_URL": f"http://127.0.0.1:{port['as']}/introspect",
        "SMART_GUARD_CLIENT_ID": "fhir-server",
        "SMART_GUARD_CLIENT_SECRET": SECRET,
        "SMART_GUARD_CACHE_MAX_TTL_SECS": "86400",
        "RUST_LOG": "warn",
    })
    modes = {
        "hyper-forward": ([BARE_FORWARD, f"127.0.0.1:{port['bare']}", f"127.0.0.1:{port['upstream']}"], None,
                          port["bare"]),
        "smart-guard": ([SMART_GUARD, "proxy"], env, port["guard"]),
    }
    per = {}
    for mode, (cmd, menv, listen) in modes.items():
        out = os.path.join(tmp, f"{mode}.cg")
        p = servers.start(mode, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + (["--dump-instr=yes"] if args.dump_instr else []) + cmd, env=menv, stdout=subprocess.PIPE)
        p.stdout.readline()
        url = f"http://127.0.0.1:{listen}/fhir/Patient/1"
        status, body = wait_http(url, headers=auth, timeout=60)
        assert status == 200 and json.loads(body)["resourceType"] == "Patient", (mode, status)
        for _ in range(20):
            wait_http(url, headers=auth)
        subprocess.run(["callgrind_control", "--zero", str(p.pid)], check=True, capture_output=True)
        wrk = subprocess.run(["wrk", "-t1", "--latency", f"-c{args.connections}", f"-d{args.seconds}s",
                              "-H", f"Authorization: Bearer {token}", url],
                             capture_output=True, text=True, check=True).stdout
        subprocess.run(["callgrind_control", "--dump", str(p.pid)], check=True, capture_output=True)
        requests = proxy_load.parse_wrk(wrk)["requests"]
        servers.stop(mode)
        time.sleep(0.5)
        total = 0
        for f in os.listdir(tmp):
            # The explicit dump: what the counters collected from the zeroing to the end of wrk.
            if f == f"{mode}.cg.1":
                m = re.search(r"^summary: (\d+)", open(os.path.join(tmp, f)).read(), re.M)
                total += int(m.group(1)) if m else 0
                if args.annotate:
                    a = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", os.path.join(tmp, f)],
                                       capture_output=True, text=True).stdout
                    print("\n".join(a.splitlines()[:60]), file=sys.stderr)
        per[mode] = total / max(requests, 1)
        print(f"{mode:>14}: {per[mode]:8.0f} instructions per request ({requests} requests)", flush=True)
        if args.atomics:
            counts = callgrind_atomics.atomics(os.path.join(tmp, f"{mode}.cg.1"), cmd[0])
            n = max(requests, 1)
            print(f"{'':>14}  {sum(counts.values()) / n:8.1f} atomic read-modify-writes per request", flush=True)
            for function, count in counts.most_common(12):
                print(f"{'':>18}{count / n:6.2f}  {function[:110]}", file=sys.stderr)
    print(f"smart-guard over the floor: {per['smart-guard'] - per['hyper-forward']:.0f} instructions "
          f"per request ({per['smart-guard'] / per['hyper-forward']:.2f}x)")


if __name__ == "__main__":
    main()
