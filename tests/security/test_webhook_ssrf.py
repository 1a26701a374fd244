"""Webhooks as server-side request forgery (issue 22, items 2 and 15), against a real server.

A tenant admin chooses a webhook's URL; the server must not become their way into the machine or
its network. Literal internal addresses, in every spelling, are refused at registration; names are
resolved and checked at each delivery, and the connection goes to the checked address; redirects
are not followed; a reply is kept as a short sanitised excerpt that only admins read.

The server allows one internal address, 127.0.0.2 (TUNELAB_WEBHOOK_ALLOWED_HOSTS), where the
tests' receivers stand in for public ones; a canary listens on every other local address."""

from __future__ import annotations

import socket
import time
import unicodedata

import ipaddress
import pytest

from service.server_proc import ServerProcess

from .webhook_receivers import Canary, Receiver, cancelled_job

# The address checks do not depend on the database: `make test` runs them on SQLite, `make test-slow` on both.
pytestmark = pytest.mark.slow_on_postgresql


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    from service.conftest import database_url

    home = tmp_path_factory.mktemp(f"ssrf-{backend}")
    # worker_poll_seconds: the worker claims no job, so events come from jobs cancelled while queued
    srv = ServerProcess(home, database_url(backend, "ssrf"), webhook_allowed_hosts="127.0.0.2",
                        worker_poll_seconds=3600).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def canary():
    c = Canary()
    yield c
    c.close()


# Every way of writing "this machine" or "an internal network" that a resolver or a connect takes.
INTERNAL = [
    "http://127.0.0.1:{p}/h", "https://127.0.0.1:{p}/h", "http://127.0.0.1.:{p}/h", "http://localhost:{p}/h",
    "http://LOCALHOST.:{p}/h", "http://app.localhost:{p}/h",
    "http://2130706433:{p}/h", "http://0x7f000001:{p}/h", "http://0x7f.1:{p}/h", "http://127.1:{p}/h",
    "http://0177.0.0.1:{p}/h", "http://017700000001:{p}/h", "http://0:{p}/h", "http://0.0.0.0:{p}/h",
    "http://[::1]:{p}/h", "http://[0:0:0:0:0:0:0:1]:{p}/h", "http://[::]:{p}/h",
    "http://[::ffff:127.0.0.1]:{p}/h", "http://[::ffff:7f00:1]:{p}/h", "http://[::127.0.0.1]:{p}/h",
    "http://[2002:7f00:1::]:{p}/h", "http://[64:ff9b::7f00:1]:{p}/h",
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/h", "http://[fd00::1]/h",
    "http://10.0.0.1/h", "http://172.16.0.1/h", "http://192.168.0.1/h", "http://100.64.0.1/h",
    "http://224.0.0.1/h", "http://[ff02::1]/h", "http://255.255.255.255/h", "http://240.0.0.1/h",
]


@pytest.mark.parametrize("template", INTERNAL)
def test_internal_addresses_are_refused_at_registration(client_a, canary, template):
    r = client_a.post("/api/v1/webhooks", json={"url": template.format(p=canary.port)})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "webhook_url_not_allowed" and err["param"] == "url"
    assert "TUNELAB_WEBHOOK_ALLOWED_HOSTS" in err["message"]


def _deliveries(client, hook_id: str) -> list[dict]:
    r = client.get(f"/api/v1/webhooks/{hook_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _wait(predicate, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_names_resolving_inside_are_refused_when_delivering(client_a, canary, banking_subset):
    """Also: a redirect to the canary is not followed; replies are kept short and printable."""
    # A name registration cannot judge (it does no DNS): this machine's own host name, which
    # resolves to a loopback or private address.
    name = socket.gethostname()
    resolved = {ipaddress.ip_address(a[4][0]) for a in socket.getaddrinfo(name, canary.port)}
    assert resolved and not any(ip.is_global for ip in resolved), f"{name} must resolve inside: {resolved}"
    noisy = "\x1b[31mred\x1b[0m \u202eevil\u200b \x00\x07 line\r\nbreak " + "x" * 5000
    control = Receiver(200, noisy.encode())
    redirect = Receiver(302, b"moved", {"Location": f"http://127.0.0.1:{canary.port}/stolen"})
    hooks = {}
    try:
        for key, url in [("name", f"http://{name}:{canary.port}/h"), ("control", control.url),
                         ("redirect", redirect.url)]:
            hooks[key] = client_a.post("/api/v1/webhooks", json={"url": url}).json()["id"]
        cancelled_job(client_a, banking_subset[1])
        _wait(lambda: all(_deliveries(client_a, h) and _deliveries(client_a, h)[0]["attempts"] >= 1
                          for h in hooks.values()))
        got = {key: _deliveries(client_a, h)[0] for key, h in hooks.items()}
    finally:
        control.close()
        redirect.close()
        for hook_id in hooks.values():
            client_a.delete(f"/api/v1/webhooks/{hook_id}")
    assert canary.hits == []
    refused = got["name"]
    assert refused["status"] == "failed" and refused["attempts"] == 1 and refused["response_status"] is None
    assert "not public" in refused["response_body"] and "TUNELAB_WEBHOOK_ALLOWED_HOSTS" in refused["response_body"]
    assert "127.0.0.1" not in refused["response_body"]       # what an internal name resolves to stays in the log
    assert got["redirect"]["response_status"] == 302 and got["redirect"]["status"] != "delivered"
    body = got["control"]["response_body"]
    assert got["control"]["status"] == "delivered" and got["control"]["response_status"] == 200
    assert 0 < len(body) <= 300 and "red" in body and "evil" in body
    assert not [c for c in body if unicodedata.category(c)[0] == "C"], repr(body)


def test_webhooks_and_their_replies_are_for_admins_only(server, client_a):
    hook = client_a.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/x"}).json()
    try:
        for role in ("viewer", "member"):
            user = client_a.post("/api/v1/users", json={"email": f"{role}-hooks@a.test", "role": role}).json()
            key = client_a.post(f"/api/v1/users/{user['id']}/api-keys", json={"name": role}).json()["key"]
            with server.client(key) as c:
                for path in ("/api/v1/webhooks", f"/api/v1/webhooks/{hook['id']}/deliveries"):
                    r = c.get(path)
                    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (role, path, r.text)
        assert client_a.get("/api/v1/webhooks").status_code == 200
    finally:
        client_a.delete(f"/api/v1/webhooks/{hook['id']}")


def test_hooks_per_tenant_are_capped(client_b):
    made = []
    try:
        for i in range(20):                      # TUNELAB_WEBHOOK_MAX_PER_TENANT's default
            r = client_b.post("/api/v1/webhooks", json={"url": f"https://hooks.example.com/{i}"})
            assert r.status_code == 201, r.text
            made.append(r.json()["id"])
        r = client_b.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/one-too-many"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "webhook_limit"
    finally:
        for hook_id in made:
            client_b.delete(f"/api/v1/webhooks/{hook_id}")
