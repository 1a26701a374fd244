"""Request bodies are capped by route and refused before they are read when the caller cannot be
authenticated (issue 22, item 4). Raw sockets: the test sends the headers and holds the body back,
so an answer proves the server decided without reading it; the same requests on the old code got
no answer at all until the whole body had arrived."""

from __future__ import annotations

import select
import socket
import time

import httpx
import pytest

from service.server_proc import ServerProcess

SQLITE_ONLY = True      # the gate runs before the database (uploads: one key lookup)
MB = 1024 * 1024
DECIDES_WITHIN = 10.0   # seconds; generous for a loaded machine (the answers take milliseconds)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("limits"), worker=False, max_upload_mb=8,
                        rate_limit_failed_auth=1000).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server) -> str:
    return server.create_tenant("bodies", "ops@bodies.test")["api_key"]


def _open(server, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    """A connection with the request line and headers sent, and not a byte of the body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DECIDES_WITHIN)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(head.encode() + b"\r\n")
    return sock


def _answer(sock: socket.socket, wait: float = DECIDES_WITHIN) -> tuple[int, dict, bytes] | None:
    """The status, headers and body the server answered within `wait` seconds, or None."""
    if not select.select([sock], [], [], wait)[0]:
        return None
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    want = int(headers.get("content-length", 0))
    while len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


JSON = {"Content-Type": "application/json"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=xyz"}


@pytest.mark.parametrize("path, headers, length, want", [
    # the case: 50 MB to job creation without a key
    ("/api/v1/jobs", JSON, 50 * MB, {401, 413}),
    # under the 1 MB cap, no key / a key that is not shaped like one: the gate, not the cap
    ("/api/v1/jobs", JSON, 900_000, {401}),
    ("/api/v1/comparisons", {**JSON, "Authorization": "Bearer hunter2"}, 900_000, {401}),
    ("/v1/fine_tuning/jobs", JSON, 900_000, {401}),
    # uploads (8 MB here): a well-formed but unknown key is looked up before the body is read
    ("/api/v1/datasets", MULTIPART, 6 * MB, {401}),
    ("/api/v1/datasets", {**MULTIPART, "Authorization": "Bearer tl-0123456789.not-a-real-key"}, 6 * MB, {401}),
    ("/v1/files", {**MULTIPART, "X-API-Key": "tl-0123456789.not-a-real-key"}, 6 * MB, {401}),
    ("/api/v1/models/import", MULTIPART, 6 * MB, {401}),
    # the UI's upload needs a signed session cookie
    ("/datasets/upload", MULTIPART, 6 * MB, {303}),
    # sign-in: a few KB at most, whoever sends it
    ("/login", MULTIPART, 5 * MB, {413}),
])
def test_a_body_is_refused_before_it_is_read(server, path, headers, length, want):
    t0 = time.monotonic()
    with _open(server, "POST", path, {**headers, "Content-Length": str(length)}) as sock:
        got = _answer(sock)
    assert got is not None, f"{path}: no answer in {DECIDES_WITHIN} s: the server was waiting for the body"
    status, head, body = got
    assert status in want, (status, body[:300])
    assert head.get("connection") == "close"           # not drained either: the connection is dropped
    if status == 303:
        assert head["location"].startswith("/login")
    else:
        assert httpx.Response(status, content=body).json()["error"]["code"] in {
            "missing_api_key", "invalid_api_key", "body_too_large", "file_too_large"}
    print(f"{path} {length:,} B declared: {status} after {1000 * (time.monotonic() - t0):.0f} ms, no body sent")


def test_a_valid_key_may_send_its_upload(server, key):
    """The control for the cases above: with a real key, the server waits for the body and takes it."""
    headers = {**MULTIPART, "Authorization": f"Bearer {key}", "Content-Length": str(2 * MB)}
    with _open(server, "POST", "/api/v1/datasets", headers) as sock:
        assert _answer(sock, wait=1.5) is None
    with server.client(key) as c:
        csv = b"text,label\n" + b"good day,pos\nbad day,neg\n" * 20
        r = c.post("/api/v1/datasets", files={"file": ("tiny.csv", csv)})
    assert r.status_code == 201, r.text


def test_chunked_bodies_are_cut_at_the_cap(server, key):
    """No Content-Length: counted while it streams. 50 MB offered to a 1 MB route; the server answers
    413 once past 1 MB (what the client got sent before seeing it sat in socket buffers)."""
    headers = {**JSON, "Authorization": f"Bearer {key}", "Transfer-Encoding": "chunked"}
    sent, got, piece = 0, None, b"1" * 65536
    t0 = time.monotonic()
    with _open(server, "POST", "/api/v1/jobs", headers) as sock:
        try:
            while sent < 50 * MB and got is None:
                sock.sendall(_chunk(piece))
                sent += len(piece)
                if select.select([sock], [], [], 0)[0]:
                    got = _answer(sock)
        except OSError:             # the server closed while we were still sending: its answer is queued
            pass
        got = got or _answer(sock)
    assert got is not None and got[0] == 413, got
    assert httpx.Response(413, content=got[2]).json()["error"]["code"] == "body_too_large"
    assert sent < 24 * MB, f"{sent / MB:.0f} MB sent before the 413"
    print(f"chunked: 413 after {sent / MB:.1f} MB sent, {time.monotonic() - t0:.2f} s")


def test_chunked_body_without_a_key_is_refused_at_once(server):
    headers = {**JSON, "Transfer-Encoding": "chunked"}
    with _open(server, "POST", "/api/v1/jobs", headers) as sock:
        sock.sendall(_chunk(b"{" * 1000))               # the body has begun and never ends
        got = _answer(sock)
    assert got is not None and got[0] == 401, got


def test_the_sign_in_form_is_small_and_takes_no_file(server):
    """POST /login: chunked past 16 KB is 413; a file part is refused, never spooled."""
    with _open(server, "POST", "/login", {**MULTIPART, "Transfer-Encoding": "chunked"}) as sock:
        try:
            for _ in range(64):                           # 4 MB offered
                sock.sendall(_chunk(b"2" * 65536))
        except OSError:
            pass
        got = _answer(sock)
    assert got is not None and got[0] == 413, got
    with httpx.Client(base_url=server.url) as c:
        token = c.get("/login").cookies["tl_login_csrf"]
        r = c.post("/login", data={"csrf_token": token, "method": "key"}, files={"api_key": ("k.txt", b"x" * 1000)})
    assert r.status_code == 400, r.status_code
    assert "tl_session" not in r.cookies


def test_ordinary_requests_still_work(server, key):
    with server.client(key) as c:
        assert c.get("/api/v1/tenants/me").status_code == 200
        r = c.post("/api/v1/api-keys", json={"name": "ci"})
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/jobs", content=b'{"pad": "' + b"x" * (2 * MB) + b'"}', headers=JSON)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
