"""Drives examples/load_server with wrk; see scripts/load.sh."""
import argparse, json, os, re, signal, statistics, subprocess, sys, time, urllib.request

MODES = ["bare", "bare_1KB", "noop", "guarded_43B", "guarded_1KB", "jwt_rs256"]
# Each mode's ratio is taken against the bare router receiving the same Authorization header
# (which it ignores), so header size and parsing cost cancel out.
BASELINE = {"bare": "bare", "bare_1KB": "bare", "noop": "bare", "guarded_43B": "bare",
            "guarded_1KB": "bare_1KB", "jwt_rs256": "bare"}

def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, latency(50), latency(99), int(errors.group(1)) if errors else 0

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--port", type=int, default=18080)
    args = ap.parse_args()

    server = subprocess.Popen(["taskset", "-c", "0", "target/release/examples/load_server", str(args.port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        ports = info["ports"]
        targets = {
            "bare": (ports["bare"], info["short"]),
            "bare_1KB": (ports["bare"], info["long"]),
            "noop": (ports["noop"], info["short"]),
            "guarded_43B": (ports["guarded"], info["short"]),
            "guarded_1KB": (ports["guarded"], info["long"]),
            "jwt_rs256": (ports["jwt"], info["jwt"]),
        }
        url = lambda port: f"http://127.0.0.1:{port}/fhir/Patient/123"
        for mode, (port, token) in targets.items():  # warm up: the guard's one AS call per token
            req = urllib.request.Request(url(port), headers={"Authorization": f"Bearer {token}"} if token else {})
            for _ in range(50):
                try:
                    assert urllib.request.urlopen(req, timeout=5).status == 200, mode
                    break
                except OSError:
                    time.sleep(0.1)
        results = {m: [] for m in MODES}
        for r in range(args.rounds):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]  # alternate the order
            for mode in order:
                port, token = targets[mode]
                cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
                if token:
                    cmd += ["-H", f"Authorization: Bearer {token}"]
                out = subprocess.run(cmd + [url(port)], capture_output=True, text=True, check=True).stdout
                rps, p50, p99, non2xx = parse_wrk(out)
                if non2xx:
                    sys.exit(f"{mode}: {non2xx} non-2xx responses")
                results[mode].append((rps, p50, p99))
                print(f"round {r + 1} {mode:12} {rps:10.0f} req/s  p50 {p50:7.0f} us  p99 {p99:7.0f} us", file=sys.stderr)
        print(f"\n{args.rounds} rounds x {args.seconds} s, {args.connections} connections, server on core 0, wrk on core 1")
        print(f"{'mode':12} {'req/s (median)':>15} {'spread':>17} {'p50 us':>8} {'p99 us':>8} {'ratio':>7}  vs")
        for mode in MODES:
            rps = [x[0] for x in results[mode]]
            base = [x[0] for x in results[BASELINE[mode]]]
            ratios = [a / b for a, b in zip(rps, base)]  # same round, same conditions
            print(f"{mode:12} {statistics.median(rps):15.0f} {min(rps):8.0f}-{max(rps):<8.0f} "
                  f"{statistics.median(x[1] for x in results[mode]):8.0f} {statistics.median(x[2] for x in results[mode]):8.0f} "
                  f"{statistics.median(ratios):7.3f}  {BASELINE[mode]}")
        g = statistics.median(x[0] for x in results["guarded_43B"]); j = statistics.median(x[0] for x in results["jwt_rs256"])
        print(f"guarded_43B / jwt_rs256 = {g / j:.2f}x")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)

if __name__ == "__main__":
    main()
