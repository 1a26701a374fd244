"""Service latency benchmark: many clients polling job status, on SQLite and on PostgreSQL.

What it measures. A real `tunelab serve --no-worker` (one uvicorn process, JSON logs, as deployed)
on a fresh database; one tenant, a small uploaded CSV, a few queued jobs and one API key per client
(created through the API: 200 SDKs or UI tabs, not one key shared, which the per-key rate limit
would refuse). Then C async clients (an httpx.AsyncClient each, one connection each, all in one
process and event loop) GET /api/v1/jobs/{id} (the call every SDK/UI makes while a job runs), in
one or both of two modes, each for S seconds after a short warm-up:

- closed loop: each client sends its next request as soon as the last is answered (the most the
  server can take; latency is mostly queueing once it is saturated);
- open loop: each client sends one request every 1/R seconds on its own schedule (random phase),
  whether or not the last was answered, which is what polling UIs and SDKs do. Latency counts
  from when the request was due, so a stalled server is not hidden (no coordinated omission).

Per backend and mode: requests/s, client-side latency p50/p90/p99/max (ms, what a caller waits,
including queueing in the server), the server's time per request from its access log (the app's
middleware: includes waiting for a worker thread and a DB connection, not uvicorn's parsing), CPU
ms per request of the server process and of this client process (the load-independent number on
a busy machine), and errors (counted whenever they happen, warm-up included: a stalled server
shows up here as timeouts and 500s).

With --streams N, N live job streams (SSE, spread over the keys) are also held open for S seconds
with nothing to report: the server's CPU while they idle, and its database statements (PostgreSQL:
pg_stat_database) per second, show what a stream costs when it is not polling on its own.

The load generator and the server share the machine's CPUs, so on a small box requests/s is a
floor, and p99 includes the client's own scheduling. PostgreSQL is whatever the URL points at
(scripts/pg-test-server's throwaway cluster runs with fsync off).

Usage: .venv/bin/python benchmarks/bench_service.py [--seconds 20] [--clients 200] [--jobs 5]
       [--modes closed,open] [--rate 1] [--streams 0] [--keys N (default: one a client)]
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
    def __init__(self, home: Path, database_url: str | None, **settings: str):
        self.home, self.port = home, free_port()
        self.env = {**os.environ, "TUNELAB_HOME": str(home), "TUNELAB_LOG_JSON": "true",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    **{f"TUNELAB_{k.upper()}": str(v) for k, v in settings.items()}}
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


def setup_jobs(srv: Server, n_jobs: int, n_keys: int = 1) -> tuple[list[str], list[str]]:
    """The tenant's keys (its first admin's, then n_keys - 1 more) and n_jobs queued jobs."""
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
        keys = [key]
        for i in range(n_keys - 1):
            r = c.post("/api/v1/api-keys", json={"name": f"bench-{i}"})
            r.raise_for_status()
            keys.append(r.json()["key"])
    return keys, job_ids


def _client(url: str, key: str) -> httpx.AsyncClient:
    """One keep-alive connection (one shared client with a 200-connection pool costs more client
    CPU per request than the server spends)."""
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                             limits=httpx.Limits(max_connections=1), timeout=60,
                             verify=False)   # safe: plain http to 127.0.0.1; skips loading CA certs 200 times


async def _get(client: httpx.AsyncClient, path: str) -> str | None:
    """None when answered 200, else what went wrong."""
    try:
        r = await client.get(path)
        return None if r.status_code == 200 else f"HTTP {r.status_code}"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def poll(url: str, keys: list[str], job_ids: list[str], clients: int, seconds: float, warmup: float,
               rate: float | None = None) -> dict:
    """`clients` clients polling job status for warmup + seconds. rate=None: a closed loop (the next
    request when the last is answered); else an open loop, `rate` requests a second each, latency
    counted from when each request was due."""
    import random

    latencies: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds
    phases = random.Random(0)

    async def one(i: int) -> None:
        nonlocal done
        n = i
        due = t_start + (phases.random() / rate if rate else 0.0)
        async with _client(url, keys[i % len(keys)]) as client:
            while True:
                if rate:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                t0 = due if rate else time.perf_counter()
                if t0 >= t_end:
                    return
                err = await _get(client, f"/api/v1/jobs/{job_ids[n % len(job_ids)]}")
                n += 1
                t1 = time.perf_counter()
                if err is not None:          # counted whenever it happened: a stall shows up here
                    errors[err] = errors.get(err, 0) + 1
                else:
                    done += 1
                    if t0 >= t_measure:
                        latencies.append((t1 - t0) * 1000)
                due += 1 / rate if rate else 0.0

    await asyncio.gather(*(one(i) for i in range(clients)))
    return {"latencies": latencies, "errors": errors, "seconds": seconds, "done": done}


async def hold_streams(url: str, keys: list[str], job_ids: list[str], n: int, seconds: float, on_open) -> dict:
    """n job streams open at once (round-robin over keys and jobs) for `seconds` after all opened;
    `on_open()` is called once they are (the measurement starts there)."""
    opened, refused, stop = 0, {}, asyncio.Event()

    async def one(i: int) -> None:
        nonlocal opened
        async with _client(url, keys[i % len(keys)]) as client:
            try:
                async with client.stream("GET", f"/api/v1/jobs/{job_ids[i % len(job_ids)]}/stream",
                                         timeout=httpx.Timeout(60, read=None)) as r:
                    if r.status_code != 200:
                        refused[r.status_code] = refused.get(r.status_code, 0) + 1
                        return
                    opened += 1
                    reader = asyncio.ensure_future(r.aread())
                    await stop.wait()
                    reader.cancel()
            except httpx.HTTPError as exc:
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    deadline = time.perf_counter() + 60
    while opened + sum(refused.values()) < n and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    # past the first ticks (every stream is fed by now), and past PostgreSQL's flush of the earlier
    # phases' statistics (an idle backend reports its counts within 10 s)
    await asyncio.sleep(11.0)
    measure = on_open()
    await asyncio.sleep(seconds)
    result = measure()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"streams": opened, "refused": refused, **result}


def pg_statements(db_url: str | None):
    """A reader of the database's statement count, for PostgreSQL (None on SQLite: no counter)."""
    if not db_url:
        return None
    import psycopg

    name = db_url.rsplit("/", 1)[1]

    def read() -> int:   # transactions committed + rolled back: every autocommitted read is one
        with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres",
                             autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                                (name,)).fetchone()[0]
    return read


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _server_ms(log_path: Path, mark: int) -> list[float]:
    """The server's own handler times for the status GETs logged after `mark` (its access log)."""
    out = []
    with open(log_path, "rb") as f:
        f.seek(mark)
        for line in f.read().decode(errors="replace").splitlines():
            if line.startswith("{") and '"request"' in line:
                rec = json.loads(line)
                if rec.get("msg") == "request" and rec.get("path", "").startswith("/api/v1/jobs/"):
                    out.append(float(rec["ms"]))
    return out


def run_mode(srv: Server, keys: list[str], job_ids: list[str], mode: str, args) -> dict:
    mark = srv.log_path.stat().st_size
    proc, me = psutil.Process(srv.proc.pid), psutil.Process()
    cpu0, mine0 = sum(proc.cpu_times()[:2]), sum(me.cpu_times()[:2])
    res = asyncio.run(poll(srv.url, keys, job_ids, args.clients, args.seconds, args.warmup,
                           rate=args.rate if mode == "open" else None))
    cpu, mine = sum(proc.cpu_times()[:2]) - cpu0, sum(me.cpu_times()[:2]) - mine0
    server_ms = _server_ms(srv.log_path, mark)
    served = len(server_ms) or res["done"]    # every poll of the run, warm-up included
    lat = res["latencies"]
    return {"mode": mode, "requests": len(lat), "rps": len(lat) / res["seconds"],
            "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": max(lat, default=float("nan")),
            "server_p50": pct(server_ms, 50), "server_p99": pct(server_ms, 99),
            "server_cpu_ms": cpu * 1000 / served if served else float("nan"),
            "client_cpu_ms": mine * 1000 / res["done"] if res["done"] else float("nan"),
            "errors": sum(res["errors"].values()), "error_kinds": res["errors"]}


def run_streams(srv: Server, keys: list[str], job_ids: list[str], db_url: str | None, args) -> dict:
    proc = psutil.Process(srv.proc.pid)
    statements = pg_statements(db_url)

    def on_open():
        t0, cpu0 = time.perf_counter(), sum(proc.cpu_times()[:2])
        st0 = statements() if statements else None

        def measure() -> dict:
            wall = time.perf_counter() - t0
            st = (statements() - st0) / wall if statements else float("nan")
            return {"server_cpu_pct": (sum(proc.cpu_times()[:2]) - cpu0) / wall * 100, "db_tx_per_s": st}
        return measure
    return asyncio.run(hold_streams(srv.url, keys, job_ids, args.streams, args.seconds, on_open))


def run_backend(backend: str, pg_url: str | None, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-service-{backend}-") as tmp:
        home = Path(tmp)
        db_name = f"bench_service_{os.getpid()}"
        db_url = fresh_postgres_db(pg_url, db_name) if backend == "postgresql" else None
        # the streams measured are the benchmark's own: no stream limit in the way
        limits = {"stream_max_per_key": 0, "stream_max_per_tenant": 0} if args.streams else {}
        srv = Server(home, db_url, **limits).start()
        try:
            keys, job_ids = setup_jobs(srv, args.jobs, args.keys or args.clients)
            rows = [run_mode(srv, keys, job_ids, mode, args) for mode in args.modes]
            streams = run_streams(srv, keys, job_ids, db_url, args) if args.streams else None
            log_lines = sum(1 for _ in open(srv.log_path, "rb"))
        finally:
            srv.stop()
            if db_url:
                drop_postgres_db(pg_url, db_name)
    return {"backend": backend, "modes": rows, "streams": streams, "log_lines": log_lines}


def report(results: list[dict], args) -> None:
    head = f"{'backend':<11} {'mode':<7} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} " \
           f"{'srv p50':>8} {'srv p99':>8} {'srv CPU':>8} {'cli CPU':>8} {'errors':>6}"
    print()
    print(head)
    print("-" * len(head))
    for b in results:
        for r in b["modes"]:
            print(f"{b['backend']:<11} {r['mode']:<7} {r['rps']:>7.0f} {r['p50']:>7.1f} {r['p90']:>7.1f} "
                  f"{r['p99']:>7.1f} {r['max']:>7.0f} {r['server_p50']:>8.1f} {r['server_p99']:>8.1f} "
                  f"{r['server_cpu_ms']:>8.2f} {r['client_cpu_ms']:>8.2f} {r['errors']:>6}")
    for b in results:
        for r in b["modes"]:
            if r["error_kinds"]:
                print(f"  {b['backend']} {r['mode']} errors: {r['error_kinds']}")
    print("closed: each client's next request when the last is answered; open: each client "
          f"{args.rate:g} request/s on its own schedule, latency from when it was due.\n"
          "srv p50/p99: time inside the app per request (its access-log middleware: includes waiting for a\n"
          "  thread and a DB connection); srv/cli CPU: CPU ms the server / this client process spent per request.")
    for b in results:
        st = b["streams"]
        if st:
            print(f"{b['backend']}: {st['streams']} idle job streams open (refused: {st['refused'] or 'none'}): "
                  f"server CPU {st['server_cpu_pct']:.1f}%, database transactions {st['db_tx_per_s']:.1f}/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per backend and mode")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=5)
    ap.add_argument("--modes", default="closed,open", help="closed, open, or both (comma-separated)")
    ap.add_argument("--rate", type=float, default=1.0, help="open loop: requests a second per client")
    ap.add_argument("--keys", type=int, default=0, help="API keys the clients share (default: one each)")
    ap.add_argument("--streams", type=int, default=0, help="also hold this many idle job streams open")
    ap.add_argument("--postgres", default=os.environ.get("TUNELAB_TEST_POSTGRES_URL"),
                    help="postgresql+psycopg://user@host:port/db (default: $TUNELAB_TEST_POSTGRES_URL)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    if not set(args.modes) <= {"closed", "open"}:
        ap.error("--modes: closed and/or open")

    backends = [b for b in args.backends.split(",") if b]
    if "postgresql" in backends and not args.postgres:
        print("PostgreSQL: no --postgres URL and no TUNELAB_TEST_POSTGRES_URL; SQLite only", file=sys.stderr)
        backends.remove("postgresql")
    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at start; python {platform.python_version()}",
          flush=True)
    print(f"{args.clients} clients ({args.keys or args.clients} API keys) polling GET /api/v1/jobs/{{id}} over "
          f"{args.jobs} jobs, {args.seconds:g} s measured after {args.warmup:g} s warm-up, per backend and mode",
          flush=True)
    results = []
    for b in backends:
        print(f"  running {b} ...", file=sys.stderr, flush=True)
        results.append(run_backend(b, args.postgres, args))
    report(results, args)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
