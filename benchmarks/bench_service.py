"""Service latency benchmark: many clients polling job status, on SQLite and on PostgreSQL.

What it measures. A real `tunelab serve --no-worker` (one uvicorn process, JSON logs, as deployed)
on a fresh database; one tenant, a small uploaded CSV and a few queued jobs (created through the
API). Then C concurrent async clients (an httpx.AsyncClient each, one connection each, all in one
process and event loop), each in a loop doing GET /api/v1/jobs/{id} (the call every SDK/UI makes
while a job runs) for S seconds, after a short warm-up. Per backend: requests/s, client-side latency p50/p90/p99/max (ms, what a caller waits,
including queueing in the server), the server's time per request from its access log (the app's
middleware: includes waiting for a worker thread and a DB connection, not uvicorn's parsing), CPU
ms per request of the server process and of this client process (the load-independent number on
a busy machine), and errors (counted whenever they happen, warm-up included: a stalled server
shows up here as timeouts and 500s).

The load generator and the server share the machine's CPUs, so on a small box requests/s is a
floor, and p99 includes the client's own scheduling. PostgreSQL is whatever the URL points at
(scripts/pg-test-server's throwaway cluster runs with fsync off).

Usage: .venv/bin/python benchmarks/bench_service.py [--seconds 20] [--clients 200] [--jobs 5]
       [--postgres URL | env TUNELAB_TEST_POSTGRES_URL] [--backends sqlite,postgresql] [--json PATH]
`make bench-service` runs it with a throwaway PostgreSQL cluster when PostgreSQL is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

TUNELAB = [sys.executable, "-m", "tunelab.server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_postgres_db(base: str, name: str) -> str:
    """A new, empty database next to the one `base` names (the server migrates it)."""
    import psycopg

    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


def drop_postgres_db(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


class Server:
    def __init__(self, home: Path, database_url: str | None):
        self.home, self.port = home, free_port()
        self.env = {**os.environ, "TUNELAB_HOME": str(home), "TUNELAB_LOG_JSON": "true",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.env.pop("TUNELAB_DATABASE_URL", None)
        if database_url:
            self.env["TUNELAB_DATABASE_URL"] = database_url
        self.log_path = home / "server.log"
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> "Server":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*TUNELAB, "serve", "--port", str(self.port), "--no-worker"],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log_path.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start:\n" + self.log_path.read_text(errors="replace")[-3000:])

    def admin(self, *args: str) -> str:
        r = subprocess.run([*TUNELAB, "admin", *args], env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(r.stderr)
        return r.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def make_csv(path: Path, rows: int = 60) -> Path:
    labels = ["billing", "shipping", "refund"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for i in range(rows):
            label = labels[i % 3]
            f.write(f"message number {i} about my {label} question,{label}\n")
    return path


def setup_jobs(srv: Server, n_jobs: int) -> tuple[str, list[str]]:
    key = json.loads(srv.admin("create-tenant", "bench", "--admin-email", "bench@example.com", "--json"))["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as c:
        csv = make_csv(srv.home / "bench.csv")
        with open(csv, "rb") as f:
            r = c.post("/api/v1/datasets", files={"file": ("bench.csv", f, "text/csv")})
        r.raise_for_status()
        dataset_id = r.json()["id"]
        job_ids = []
        for _ in range(n_jobs):
            r = c.post("/api/v1/jobs", json={"dataset_id": dataset_id, "strategy": "linear-probe"})
            r.raise_for_status()
            job_ids.append(r.json()["id"])
    return key, job_ids


async def poll(url: str, key: str, job_ids: list[str], clients: int, seconds: float, warmup: float) -> dict:
    """`clients` clients, each its own httpx.AsyncClient with one keep-alive connection (one shared
    client with a 200-connection pool costs more client CPU per request than the server spends)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds

    async def one(i: int) -> None:
        nonlocal done
        n = i
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                     limits=httpx.Limits(max_connections=1), timeout=60,
                                     verify=False) as client:   # safe: plain http to 127.0.0.1; skips loading CA certs 200 times
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                path = f"/api/v1/jobs/{job_ids[n % len(job_ids)]}"
                n += 1
                try:
                    r = await client.get(path)
                    err = None if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    err = type(exc).__name__
                t1 = time.perf_counter()
                if err is not None:          # counted whenever it happened: a stall shows up here
                    errors[err] = errors.get(err, 0) + 1
                else:
                    done += 1
                    if t0 >= t_measure:
                        latencies.append((t1 - t0) * 1000)

    await asyncio.gather(*(one(i) for i in range(clients)))
    return {"latencies": latencies, "errors": errors, "seconds": seconds, "done": done}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_backend(backend: str, pg_url: str | None, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-service-{backend}-") as tmp:
        home = Path(tmp)
        db_name = f"bench_service_{os.getpid()}"
        db_url = fresh_postgres_db(pg_url, db_name) if backend == "postgresql" else None
        srv = Server(home, db_url).start()
        try:
            key, job_ids = setup_jobs(srv, args.jobs)
            log_mark = srv.log_path.stat().st_size
            proc, me = psutil.Process(srv.proc.pid), psutil.Process()
            cpu0, mine0 = sum(proc.cpu_times()[:2]), sum(me.cpu_times()[:2])
            res = asyncio.run(poll(srv.url, key, job_ids, args.clients, args.seconds, args.warmup))
            cpu, mine = sum(proc.cpu_times()[:2]) - cpu0, sum(me.cpu_times()[:2]) - mine0
            # the server's own handler times for the polling requests (its access log after setup)
            server_ms = []
            with open(srv.log_path, "rb") as f:
                f.seek(log_mark)
                for line in f.read().decode(errors="replace").splitlines():
                    if line.startswith("{") and '"request"' in line:
                        rec = json.loads(line)
                        if rec.get("msg") == "request" and rec.get("path", "").startswith("/api/v1/jobs/"):
                            server_ms.append(float(rec["ms"]))
            served = len(server_ms) or res["done"]    # every poll of the run, warm-up included
            log_lines = sum(1 for _ in open(srv.log_path, "rb"))
        finally:
            srv.stop()
            if db_url:
                drop_postgres_db(pg_url, db_name)
    lat = res["latencies"]
    return {"backend": backend, "requests": len(lat), "rps": len(lat) / res["seconds"],
            "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": max(lat, default=float("nan")),
            "server_p50": pct(server_ms, 50), "server_p99": pct(server_ms, 99),
            "server_cpu_ms": cpu * 1000 / served if served else float("nan"),
            "client_cpu_ms": mine * 1000 / res["done"] if res["done"] else float("nan"),
            "errors": sum(res["errors"].values()), "error_kinds": res["errors"], "log_lines": log_lines}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per backend")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=5)
    ap.add_argument("--postgres", default=os.environ.get("TUNELAB_TEST_POSTGRES_URL"),
                    help="postgresql+psycopg://user@host:port/db (default: $TUNELAB_TEST_POSTGRES_URL)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)

    backends = [b for b in args.backends.split(",") if b]
    if "postgresql" in backends and not args.postgres:
        print("PostgreSQL: no --postgres URL and no TUNELAB_TEST_POSTGRES_URL; SQLite only", file=sys.stderr)
        backends.remove("postgresql")
    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at start; python {platform.python_version()}",
          flush=True)
    print(f"{args.clients} clients polling GET /api/v1/jobs/{{id}} over {args.jobs} jobs, "
          f"{args.seconds:g} s measured after {args.warmup:g} s warm-up, per backend", flush=True)
    rows = []
    for b in backends:
        print(f"  running {b} ...", file=sys.stderr, flush=True)
        rows.append(run_backend(b, args.postgres, args))
    load = os.getloadavg()
    head = f"{'backend':<11} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} " \
           f"{'srv p50':>8} {'srv p99':>8} {'srv CPU':>8} {'cli CPU':>8} {'errors':>6}"
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['backend']:<11} {r['rps']:>7.0f} {r['p50']:>7.1f} {r['p90']:>7.1f} {r['p99']:>7.1f} "
              f"{r['max']:>7.0f} {r['server_p50']:>8.1f} {r['server_p99']:>8.1f} {r['server_cpu_ms']:>8.2f} "
              f"{r['client_cpu_ms']:>8.2f} {r['errors']:>6}")
    for r in rows:
        if r["error_kinds"]:
            print(f"  {r['backend']} errors: {r['error_kinds']}")
    print("srv p50/p99: time inside the app per request (its access-log middleware: includes waiting for a\n"
          "  thread and a DB connection); srv/cli CPU: CPU ms the server / this client process spent per request.")
    print(f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at end")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
