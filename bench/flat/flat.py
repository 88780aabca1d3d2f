"""Flat costs over many runs on one database (see bench/flat/run)."""

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CALC = "calculate 2+3 and calculate 10*5 and calculate 7*7 then calculate 1+1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def healthy(port: int) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/health")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def start(crane: str, db: str, port: int, log) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "CRANE_ADDR": f"127.0.0.1:{port}", "CRANE_DB": db, "RUST_LOG": "warn"}
    t0 = time.monotonic()
    p = subprocess.Popen([crane], env=env, stdout=log, stderr=log)
    while not healthy(port):
        if p.poll() is not None:
            sys.exit(f"crane-local exited with {p.returncode}; see its log")
        if time.monotonic() - t0 > 60:
            p.kill()
            sys.exit("crane-local did not answer /health within 60 s")
        time.sleep(0.005)
    return p, time.monotonic() - t0


def stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def chunk(bench: str, port: int, runs: int, concurrency: int, prompt: str) -> float:
    out = subprocess.run(
        [bench, "--url", f"http://127.0.0.1:{port}", "--runs", str(runs),
         "--concurrency", str(concurrency), "--prompt", prompt],
        capture_output=True, text=True, check=False)
    m = re.search(r"completed:\s+(\d+) \((\d+) ended otherwise\) in [\d.]+ s = ([\d.]+) runs/s", out.stdout)
    if out.returncode != 0 or not m:
        sys.exit(f"crane-bench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    if int(m.group(1)) != runs or int(m.group(2)) != 0:
        sys.exit(f"not every run completed:\n{out.stdout}")
    return float(m.group(3))


def list_latency_ms(port: int, n: int = 50) -> list[float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for i in range(n + 5):
        t0 = time.perf_counter()
        c.request("GET", "/runs?limit=50")
        r = c.getresponse()
        body = r.read()
        dt = (time.perf_counter() - t0) * 1000
        if r.status != 200 or b'"runs"' not in body:
            sys.exit(f"GET /runs?limit=50 answered {r.status}")
        if i >= 5:  # the first few warm the connection and caches
            out.append(dt)
    c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crane-bin", required=True)
    ap.add_argument("--bench-bin", required=True)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--prompt", default=CALC)
    ap.add_argument("--alternate", type=int, default=3,
                    help="then chunks on the full database and on an empty one, alternating, "
                         "this many times each (0: none)")
    ap.add_argument("--keep", action="store_true", help="keep the database and log")
    a = ap.parse_args()
    if a.runs < a.chunks or a.chunks < 2:
        sys.exit("--runs must be at least --chunks, and --chunks at least 2")
    per = a.runs // a.chunks
    work = tempfile.mkdtemp(prefix="crane-flat-")
    db = os.path.join(work, "crane.db")
    port = free_port()
    with open(os.path.join(work, "crane-local.log"), "ab") as log:
        p, _ = start(a.crane_bin, db, port, log)
        rows = []
        try:
            for i in range(a.chunks):
                rate = chunk(a.bench_bin, port, per, a.concurrency, a.prompt)
                rows.append((i + 1, (i + 1) * per, rate, rss_mib(p.pid)))
                print(f"chunk {i + 1}/{a.chunks}: {rate:,.0f} runs/s, RSS {rows[-1][3]:.0f} MiB",
                      file=sys.stderr, flush=True)
        finally:
            stop(p)
        size = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work)
                   if f.startswith("crane.db"))
        p, startup = start(a.crane_bin, db, port, log)
        # One chunk's rate moves by a fifth from one second to the next on a shared machine,
        # so the first and last chunks, minutes apart, may differ for that alone. Chunks on
        # the full database and on an empty one, alternating, see the same machine.
        full_rates, empty_rates = [], []
        try:
            lat = sorted(list_latency_ms(port))
            for i in range(a.alternate):
                full_rates.append(chunk(a.bench_bin, port, per, a.concurrency, a.prompt))
                fresh = os.path.join(work, f"empty-{i}.db")
                fresh_port = free_port()
                q, _ = start(a.crane_bin, fresh, fresh_port, log)
                try:
                    empty_rates.append(chunk(a.bench_bin, fresh_port, per, a.concurrency, a.prompt))
                finally:
                    stop(q)
                for f in os.listdir(work):
                    if f.startswith(f"empty-{i}.db"):
                        os.remove(os.path.join(work, f))
                print(f"alternation {i + 1}/{a.alternate}: full database {full_rates[-1]:,.0f} runs/s, "
                      f"empty {empty_rates[-1]:,.0f}", file=sys.stderr, flush=True)
        finally:
            stop(p)
    print(f"\nFlat costs: {a.chunks} chunks of {per:,} runs of {a.prompt!r}, "
          f"{a.concurrency} in flight (crane-bench --url), one database\n")
    print("| chunk | runs so far | completed runs/s | crane-local RSS MiB |")
    print("|---:|---:|---:|---:|")
    for c, total, rate, rss in rows:
        print(f"| {c} | {total:,} | {rate:,.0f} | {rss:.0f} |")
    first, last = rows[0][2], rows[-1][2]
    # Memory after warm-up: from the second chunk on.
    warm = [r[3] for r in rows[1:]]
    spread = (max(warm) - min(warm)) / min(warm)
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print()
    checks = [
        ("throughput of the last chunk within 10% of the first", f"{last / first:.2f}x", last >= 0.9 * first),
        ("RSS flat within 10% after warm-up (chunks 2..)", f"{min(warm):.0f}-{max(warm):.0f} MiB ({spread:.0%})", spread <= 0.10),
        ("start-up on the database under 1 s", f"{startup * 1000:.0f} ms ({size / 1e6:.1f} MB on disk, {size / a.runs:,.0f} B/run)", startup < 1.0),
        ("GET /runs?limit=50 under 5 ms", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", p50 < 5.0),
    ]
    if full_rates:
        full, empty = statistics.median(full_rates), statistics.median(empty_rates)
        checks.insert(1, (
            f"throughput on the full database within 10% of an empty one's (chunks alternating, "
            f"{a.alternate} each, medians)",
            f"{full:,.0f} against {empty:,.0f} runs/s, {full / empty:.2f}x "
            f"(each: {', '.join(f'{r:,.0f}' for r in full_rates)} against "
            f"{', '.join(f'{r:,.0f}' for r in empty_rates)})",
            full >= 0.9 * empty))
    for what, got, ok in checks:
        print(f"- {what}: {got}: {'holds' if ok else 'DOES NOT HOLD'}")
    if a.keep:
        print(f"\nkept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
