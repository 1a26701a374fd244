"""security/egress.py and the webhook pool, on real sockets: what an address check refuses, that the
connection goes to the address checked (DNS rebinding), no redirect is followed, one deadline
bounds a whole attempt, a reply is read up to a cap and kept as a short printable excerpt, and one
tenant's hanging receivers leave the others' slots free."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import unicodedata

import httpcore
import httpx
import pytest

from tunelab.jobs import webhooks
from tunelab.security import egress

ALLOW = egress.AllowList.parse("127.0.0.2")      # the tests' stand-in for a public address


@pytest.fixture
def receiver():
    """An HTTP/1.1 server on 127.0.0.2 whose reply each test scripts: handler(conn) after the
    request has been read."""
    servers = []

    def start(handler):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.listen(8)
        servers.append(s)

        def run():
            while True:
                try:
                    conn, _ = s.accept()
                except OSError:
                    return
                conn.recv(65536)
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

        threading.Thread(target=run, daemon=True).start()
        return s.getsockname()[1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def canary():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    hits = []

    def run():
        while True:
            try:
                hits.append(s.accept())
            except OSError:
                return

    threading.Thread(target=run, daemon=True).start()
    yield s.getsockname()[1], hits
    s.close()


def _reply(body: bytes, status: str = "200 OK", headers: str = ""):
    def handler(conn):
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body)
        conn.close()
    return handler


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.1.2.3", "172.31.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "224.0.0.251", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.0.8", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "::127.0.0.1", "2002:7f00:1::1", "2002:a00:1::", "64:ff9b::a9fe:a9fe",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",     # Teredo, client 127.0.0.1 (bits inverted)
])
def test_internal_addresses_have_a_problem(address):
    assert egress.address_problem(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111",
                                     "2a00:1450:4001:82b::200e"])
def test_public_addresses_pass(address):
    assert egress.address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f000001", "0x7f.1", "127.1", "0177.0.0.1",
                                      "017700000001", "0x7f.0.0.1", "127.0.1", "0"])
def test_numeric_spellings_are_normalised_before_the_check(receiver, canary, spelling):
    """What the resolver makes of each spelling is what is checked: all of them are this machine."""
    port, hits = canary
    assert egress.numeric_host(spelling) in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("0.0.0.0"))
    with pytest.raises((egress.EgressRefused, httpx.InvalidURL)):     # httpx's parser refuses 0177.0.0.1
        egress.post(f"http://{spelling}:{port}/", b"{}", {}, egress.AllowList(), 5)
    with pytest.raises(egress.EgressRefused):      # the pinned backend, whatever URL parser ran before it
        egress.PinnedBackend(egress.AllowList(), time.monotonic() + 5).connect_tcp(spelling, port)
    assert hits == []


def test_allow_list_admits_named_networks_and_hosts():
    allow = egress.AllowList.parse("10.20.0.0/16, hooks.corp.internal 127.0.0.2")
    assert allow.allows_address(ipaddress.ip_address("10.20.3.4"))
    assert not allow.allows_address(ipaddress.ip_address("10.21.0.1"))
    assert allow.allows_host("HOOKS.corp.internal.")
    assert egress.url_problem("http://10.20.3.4/h", allow) is None
    assert egress.url_problem("http://10.21.3.4/h", allow)


def test_the_connection_goes_to_the_address_checked(receiver, monkeypatch):
    """DNS rebinding: the name answers with an allowed address once, then with loopback. One
    lookup, checked, and the connect uses that address: a trap on loopback sees nothing."""
    port_ok = receiver(_reply(b"ok"))
    real, asked = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        ip = "127.0.0.2" if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    # The same port on both addresses: the receiver on 127.0.0.2, the canary answering on 127.0.0.1
    # only if the code looked the name up again.
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", port_ok))
        trap.listen(1)
        trap.settimeout(0.5)
        reply = egress.post(f"http://rebind.test:{port_ok}/h", b"{}", {}, ALLOW, 5)
        with pytest.raises(socket.timeout):
            trap.accept()
    assert reply.status == 200 and asked == ["rebind.test"]


def test_redirects_are_not_followed(receiver, canary):
    canary_port, hits = canary
    port = receiver(_reply(b"", "302 Found", f"Location: http://127.0.0.1:{canary_port}/x\r\n"))
    reply = egress.post(f"http://127.0.0.2:{port}/h", b"{}", {}, ALLOW, 5)
    assert reply.status == 302 and hits == []


def test_one_deadline_bounds_a_receiver_that_drips(receiver):
    """A header byte every 0.2 s keeps a per-read timeout from ever firing; the total does."""
    def drip(conn):
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(200):
                conn.sendall(b"a")
                time.sleep(0.2)
        except OSError:
            pass
    port = receiver(drip)
    t0 = time.monotonic()
    with pytest.raises(httpcore.TimeoutException):
        egress.post(f"http://127.0.0.2:{port}/h", b"{}", {}, ALLOW, 2)
    assert time.monotonic() - t0 < 6          # 2 s deadline; the drip would last 40 s


def test_the_reply_is_read_up_to_a_cap(receiver):
    def flood(conn):
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
            while True:
                conn.sendall(b"x" * 65536)
        except OSError:
            pass
    port = receiver(flood)
    reply = egress.post(f"http://127.0.0.2:{port}/h", b"{}", {}, ALLOW, 10, read_cap=64 * 1024)
    assert reply.status == 200 and len(reply.body) == 64 * 1024


def test_excerpt_is_short_and_printable():
    text = "\x1b[31mred\x1b[0m\u202eevil\u200b\x00\x07 a\r\nb\t" + "é" * 5000
    out = webhooks.excerpt(text.encode())
    assert len(out) <= webhooks.EXCERPT_CHARS and out.startswith("[31mred")
    assert not [c for c in out if unicodedata.category(c)[0] == "C"]
    assert webhooks.excerpt(b"\xff\xfe broken utf-8") and webhooks.excerpt(None) is None


def test_one_tenants_hanging_receivers_leave_the_others_slots_free(receiver):
    """The pool's accounting: tenant A's attempts hang, B's one starts and finishes at once."""
    hang = threading.Event()
    slow = receiver(lambda conn: hang.wait(30))
    fast = receiver(_reply(b"ok"))
    pool = webhooks.Dispatcher(workers=4, per_tenant=2, allow=ALLOW, seconds=30)

    def attempt(i, tenant, port):
        return webhooks.Attempt(f"d{i}", tenant, f"http://127.0.0.2:{port}/h", b"{}", {}, 30)

    for i in range(2):
        pool.submit(attempt(i, "A", slow))
    assert pool.free("A") == 0 and pool.free("B") == 2
    t0 = time.monotonic()
    pool.submit(attempt(9, "B", fast))
    done = []
    while not done and time.monotonic() - t0 < 10:
        done = pool.finished()
        time.sleep(0.05)
    hang.set()
    assert [o.delivery_id for o in done] == ["d9"] and done[0].ok
    assert time.monotonic() - t0 < 5
