"""A real tunelab server (and workers) in subprocesses, on a free port, against a real database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TUNELAB = [sys.executable, "-m", "tunelab.server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, home: Path, database_url: str | None = None, *, worker: bool = True, **settings):
        self.home, self.port = Path(home), free_port()
        self.env = {**os.environ, "TUNELAB_HOME": str(home), "TUNELAB_LOG_JSON": "true",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if database_url:
            self.env["TUNELAB_DATABASE_URL"] = database_url
        if worker:               # jobs run sandboxed, as in production: never quietly unsandboxed
            from sysdeps import require_sandbox

            require_sandbox()
        for key, value in settings.items():
            self.env[f"TUNELAB_{key.upper()}"] = str(value)
        self.worker, self.proc, self.workers = worker, None, []
        self.home.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> "ServerProcess":
        args = [*TUNELAB, "serve", "--port", str(self.port)] + ([] if self.worker else ["--no-worker"])
        self.log = open(self.home / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return (self.home / f"server-{self.port}.log").read_bytes()[-n:].decode(errors="replace")

    def run(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([*TUNELAB, *map(str, args)], env=self.env, capture_output=True, text=True, timeout=300)
        if check and r.returncode != 0:
            raise RuntimeError(r.stderr)
        return r

    def create_tenant(self, name: str, email: str = "admin@example.com") -> dict:
        return json.loads(self.run("admin", "create-tenant", name, "--admin-email", email, "--json").stdout)

    def start_worker(self) -> subprocess.Popen:
        from sysdeps import require_sandbox

        require_sandbox()
        log = open(self.home / "worker.log", "ab")
        proc = subprocess.Popen([*TUNELAB, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def stop(self) -> None:
        for p in [*self.workers, self.proc]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*self.workers, self.proc]:
            if p is not None:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
