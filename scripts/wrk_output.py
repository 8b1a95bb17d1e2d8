"""Reads wrk's --latency output: shared by scripts/load.py and scripts/proxy_load.py."""
import re


def parse(text):
    """Requests/s, p50 and p99 in µs, requests, non-2xx/3xx answers and socket errors."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    return {"rps": rps, "p50": latency(50), "p99": latency(99), "requests": requests,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}
