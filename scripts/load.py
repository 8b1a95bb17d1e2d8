"""Drives the load_server harness (benches/harness/load_server.rs) with wrk; see scripts/load.sh."""
import argparse, json, os, re, signal, statistics, subprocess, sys, time, urllib.request

import wrk_output

MODES = ["bare", "bare_1KB", "noop", "guarded_43B", "guarded_1KB", "jwt_rs256"]
# Each mode's ratio is taken against the bare router receiving the same Authorization header
# (which it ignores), so header size and parsing cost cancel out.
BASELINE = {"bare": "bare", "bare_1KB": "bare", "noop": "bare", "guarded_43B": "bare",
            "guarded_1KB": "bare_1KB", "jwt_rs256": "bare"}

def parse_wrk(text):
    r = wrk_output.parse(text)
    return r["rps"], r["p50"], r["p99"], r["non2xx"], r["requests"]

def cpu_seconds(pid):
    """User + system CPU time of a process: what it ran, not what the VM's neighbours stole."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
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
        def run(mode):
            port, token = targets[mode]
            cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
            if token:
                cmd += ["-H", f"Authorization: Bearer {token}"]
            cpu_before = cpu_seconds(server.pid)
            out = subprocess.run(cmd + [url(port)], capture_output=True, text=True, check=True).stdout
            cpu = cpu_seconds(server.pid) - cpu_before
            rps, p50, p99, non2xx, requests = parse_wrk(out)
            if non2xx:
                sys.exit(f"{mode}: {non2xx} non-2xx responses")
            results[mode].append((rps, p50, p99))
            cpu_us[mode].append(cpu * 1e6 / requests)
            return rps, cpu * 1e6 / requests

        # Each mode is measured in A-B-B-A blocks against its baseline (baseline, mode, mode,
        # baseline), so a ratio compares runs seconds apart and a drift of the shared VM within a
        # block cancels out; the reported ratio is the median over rounds.
        # Besides requests/s, the server's own CPU time per request (from /proc): on a shared VM
        # the hypervisor steals time from whole runs, which moves requests/s but not the CPU time
        # the server spent on each request; its ratio is the steadier estimate of the same cost.
        results = {m: [] for m in MODES}
        cpu_us = {m: [] for m in MODES}
        ratios = {m: [] for m in MODES}
        cpu_ratios = {m: [] for m in MODES}
        others = [m for m in MODES if BASELINE[m] != m]
        for r in range(args.rounds):
            order = others[r % len(others):] + others[:r % len(others)]  # rotate the order
            for mode in order:
                base = BASELINE[mode]
                (b1, bc1), (m1, mc1), (m2, mc2), (b2, bc2) = run(base), run(mode), run(mode), run(base)
                ratios[mode].append((m1 + m2) / (b1 + b2))
                cpu_ratios[mode].append((bc1 + bc2) / (mc1 + mc2))
                print(f"round {r + 1} {mode:12} {(m1 + m2) / 2:10.0f} req/s vs {base:9} {(b1 + b2) / 2:10.0f}"
                      f"  ratio {ratios[mode][-1]:.3f}  cpu/request {(mc1 + mc2) / 2:6.2f} us vs {(bc1 + bc2) / 2:6.2f} us"
                      f"  cpu ratio {cpu_ratios[mode][-1]:.3f}", file=sys.stderr)
        print(f"\n{args.rounds} rounds of A-B-B-A blocks x {args.seconds} s, {args.connections} connections, "
              f"server on core 0, wrk on core 1")
        print(f"{'mode':12} {'req/s (median)':>15} {'spread':>17} {'p50 us':>8} {'p99 us':>8} {'ratio':>7} {'ratio spread':>14}"
              f" {'cpu us/req':>11} {'cpu ratio':>10} {'spread':>14}  vs")
        for mode in MODES:
            rps = [x[0] for x in results[mode]]
            r = ratios[mode] or [1.0]
            c = cpu_ratios[mode] or [1.0]
            print(f"{mode:12} {statistics.median(rps):15.0f} {min(rps):8.0f}-{max(rps):<8.0f} "
                  f"{statistics.median(x[1] for x in results[mode]):8.0f} {statistics.median(x[2] for x in results[mode]):8.0f} "
                  f"{statistics.median(r):7.3f} {min(r):6.3f}-{max(r):<6.3f} "
                  f"{statistics.median(cpu_us[mode]):11.2f} {statistics.median(c):10.3f} {min(c):6.3f}-{max(c):<6.3f}  {BASELINE[mode]}")
        g = statistics.median(x[0] for x in results["guarded_43B"]); j = statistics.median(x[0] for x in results["jwt_rs256"])
        print(f"guarded_43B / jwt_rs256 = {g / j:.2f}x (medians)")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)

if __name__ == "__main__":
    main()
