#!/usr/bin/env python3
"""Cold start of each Lambda function, measured locally.

For each function's release binary, N times: start a fake Lambda Runtime API on a free
loopback port, start the binary with AWS_LAMBDA_RUNTIME_API pointing at it and the
environment the template gives it (every AWS endpoint pointed at a closed local port:
init must not call AWS), and time from just before the process is spawned to the moment
its first request to the Runtime API (GET .../invocation/next) arrives. That interval is
the function's init as Lambda bills it (process start, configuration, SDK clients,
planner), plus the fork/exec of this script, so it is an upper bound.

Prints one table: median, min and max init per function, and the binary's size.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

FUNCTIONS = ["create-run", "get-run", "step-worker", "event-reactor", "compensate"]

ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "coldstart",
    "AWS_SECRET_ACCESS_KEY": "coldstart",
    # A closed port: a function that called AWS during init would fail or stall, and show.
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/coldstart",
    "AWS_LAMBDA_LOG_STREAM_NAME": "coldstart",
    "CRANE_EVENTS_TABLE": "crane-events",
    "CRANE_RUNS_TABLE": "crane-runs",
    "CRANE_TODOS_TABLE": "crane-todos",
    "CRANE_IDEMPOTENCY_TABLE": "crane-idempotency",
    "CRANE_BREAKERS_TABLE": "crane-breakers",
    "CRANE_STEP_QUEUE_URL": "http://127.0.0.1:9/000000000000/crane-steps",
    "CRANE_SAGA_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:000000000000:stateMachine:crane-saga",
    "CRANE_LOG_FORMAT": "json",
    "CRANE_PLANNER": "pattern",
    "RUST_LOG": "warn",
}


def first_request_at(listener: socket.socket, out: dict) -> None:
    """Accept one connection; record when its first bytes arrive."""
    try:
        conn, _ = listener.accept()
        conn.settimeout(10)
        data = conn.recv(4096)
        out["t"] = time.perf_counter_ns()
        out["line"] = data.split(b"\r\n", 1)[0].decode("latin-1")
        out["conn"] = conn  # held open: the runtime long-polls /next
    except OSError as e:
        out["error"] = str(e)


def measure(binary: str, name: str) -> float:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    seen: dict = {}
    waiter = threading.Thread(target=first_request_at, args=(listener, seen), daemon=True)
    waiter.start()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **ENV}
    env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{port}"
    env["AWS_LAMBDA_FUNCTION_NAME"] = name
    t0 = time.perf_counter_ns()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    waiter.join(15)
    proc.kill()
    _, err = proc.communicate()
    listener.close()
    if "conn" in seen:
        seen["conn"].close()
    if "t" not in seen:
        sys.exit(
            f"coldstart: {name} never called the Runtime API "
            f"({seen.get('error', 'no connection')}); its stderr:\n{err.decode(errors='replace')[-2000:]}"
        )
    if "/runtime/invocation/next" not in seen["line"]:
        sys.exit(f"coldstart: {name}'s first request was {seen['line']!r}, not invocation/next")
    return (seen["t"] - t0) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default="target/release", help="where the release binaries are")
    ap.add_argument("--reps", type=int, default=20, help="starts per function (default 20)")
    args = ap.parse_args()
    if args.reps < 1:
        sys.exit("coldstart: --reps must be at least 1")
    rows = []
    for name in FUNCTIONS:
        binary = os.path.join(args.bin_dir, name)
        if not os.access(binary, os.X_OK):
            sys.exit(f"coldstart: {binary} is missing; build it: cargo build --release -p {name}")
        measure(binary, name)  # warm the page cache: Lambda's init starts from a loaded image too
        ms = [measure(binary, name) for _ in range(args.reps)]
        rows.append((name, statistics.median(ms), min(ms), max(ms), os.path.getsize(binary)))
    print(f"cold start: spawn -> first GET /runtime/invocation/next, {args.reps} starts each")
    print(f"{'function':<14} {'p50 ms':>7} {'min ms':>7} {'max ms':>7} {'binary MiB':>11}")
    for name, p50, lo, hi, size in rows:
        print(f"{name:<14} {p50:>7.1f} {lo:>7.1f} {hi:>7.1f} {size / 2**20:>11.1f}")


if __name__ == "__main__":
    main()
