"""Webhook receivers for the SSRF and delivery tests, on real sockets: a canary that records every
connection it is offered, a receiver that answers (or redirects), and a tarpit whose receivers
accept and then drip one byte a second forever (a per-read timeout never fires on it)."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from service.helpers import upload


class Canary:
    """Listens on every local address (IPv4 and IPv6, dual stack) on one port and records each
    connection: whatever spelling of "this machine" a request used, it lands here."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.hits: list[tuple] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.hits.append(peer)
            conn.close()

    def close(self) -> None:
        self.sock.close()


class Receiver:
    """An HTTP receiver on 127.0.0.2 (the tests' allowed "public" address) answering every POST
    with `status`, `body` and `headers`; it records what it received and when."""

    def __init__(self, status: int = 200, body: bytes = b"ok", headers: dict | None = None):
        outer = self
        self.received: list[tuple[float, dict, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append((time.monotonic(), dict(self.headers), data))
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.2:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Tarpit:
    """`n` receivers on 127.0.0.2 that accept, start a reply, then send one header byte a second
    forever. Records the connections open now, the most open at once per named group of ports,
    and how long each connection was held before the client closed it."""

    def __init__(self, n: int):
        self.listeners = []
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.listen(64)
            s.setblocking(False)
            self.listeners.append(s)
        self.ports = [s.getsockname()[1] for s in self.listeners]
        self.open: dict[socket.socket, list] = {}        # conn -> [port, opened at, reply started]
        self.groups: dict[str, set[int]] = {}
        self.peak: dict[str, int] = {}
        self.held: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def urls(self, ports) -> list[str]:
        return [f"http://127.0.0.2:{p}/hook" for p in ports]

    def watch(self, name: str, ports) -> None:
        with self._lock:
            self.groups[name], self.peak[name] = set(ports), 0

    def open_in(self, name: str) -> int:
        with self._lock:
            return sum(1 for port, *_ in self.open.values() if port in self.groups[name])

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for s in self.listeners:
            sel.register(s, selectors.EVENT_READ, "listener")
        last_drip = time.monotonic()
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                if key.data == "listener":
                    try:
                        conn, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    sel.register(conn, selectors.EVENT_READ, "conn")
                    with self._lock:
                        self.open[conn] = [key.fileobj.getsockname()[1], time.monotonic(), False]
                else:
                    self._read(sel, key.fileobj)
            if time.monotonic() - last_drip >= 1.0:
                last_drip = time.monotonic()
                self._drip()
            self._sample()

    def _read(self, sel, conn) -> None:
        try:
            data = conn.recv(65536)          # the request: drained, never answered in full
        except OSError:
            data = b""
        if not data:                         # the client gave up and closed its end
            sel.unregister(conn)
            with self._lock:
                self.held.append(time.monotonic() - self.open.pop(conn)[1])
            conn.close()

    def _drip(self) -> None:
        with self._lock:
            for conn, state in self.open.items():
                try:
                    conn.send(b"a" if state[2] else b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    state[2] = True
                except OSError:
                    pass

    def _sample(self) -> None:
        with self._lock:
            ports = [port for port, *_ in self.open.values()]
            for name, group in self.groups.items():
                self.peak[name] = max(self.peak[name], sum(1 for p in ports if p in group))

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.2)
        with self._lock:
            for conn in self.open:
                conn.close()
        for s in self.listeners:
            s.close()


def cancelled_job(client, dataset_path) -> str:
    """A job event without training: the test servers' workers never claim jobs (a poll interval
    of an hour), so a job cancelled while queued ends at once with the `cancelled` event."""
    ds = upload(client, dataset_path)
    job = client.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot", "limit": 100,
                                            "params": {"calibration_texts": 0}})
    assert job.status_code == 201, job.text
    r = client.post(f"/api/v1/jobs/{job.json()['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    return job.json()["id"]
