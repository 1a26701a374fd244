"""Guessing API keys is throttled per client address; one key's request rate is capped."""

from __future__ import annotations

import httpx
import pytest

from service.server_proc import ServerProcess

SQLITE_ONLY = True   # the limiter lives in the server process, not the database
OPERATOR_KEY = "op-3f1c9b7a5e2d4c6b8a0f"


def from_address(host: str, **kw) -> httpx.Client:
    """A client whose connections come from `host` (any 127.x.y.z is this machine): the limits are
    per client address, so each test guesses from its own and blocks no other test."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=host), timeout=60, **kw)


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    from service.conftest import database_url

    srv = ServerProcess(tmp_path_factory.mktemp("limits"), database_url(backend, "limits"),
                        rate_limit_failed_auth=5, rate_limit_per_key=40, worker=False,
                        operator_api_key=OPERATOR_KEY).start()
    yield srv
    srv.stop()


def test_key_guessing_is_throttled(server):
    guesser = from_address("127.0.0.5", base_url=server.url)
    codes = [guesser.get("/api/v1/datasets", headers={"Authorization": f"Bearer tl-{i:010d}.guess"}).status_code
             for i in range(8)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429, codes
    r = guesser.get("/api/v1/datasets", headers={"Authorization": "Bearer tl-0000000000.guess"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert r.json()["error"]["code"] == "rate_limited"


def test_one_keys_rate_is_capped(server, tenant_a):
    with server.client(tenant_a["api_key"]) as c:
        codes = [c.get("/api/v1/tenants/me").status_code for _ in range(45)]
    assert codes.count(200) == 40 and codes[-1] == 429, codes


def test_a_blocked_address_learns_nothing_from_a_right_key(server):
    """The limit is checked before the key: once an address is over it, even a right key gets 429
    (before issue 22, a right guess answered 200 among the 429s: the throttle told when it was hit).
    Another address is not affected."""
    right = {"Authorization": f"Bearer {server.create_tenant('guessed', 'g@guessed.test')['api_key']}"}
    with from_address("127.0.0.6", base_url=server.url) as guesser:
        codes = [guesser.get("/api/v1/tenants/me", headers={"Authorization": f"Bearer tl-{i:010d}.guess"}).status_code
                 for i in range(6)]
        assert codes == [401] * 5 + [429], codes
        r = guesser.get("/api/v1/tenants/me", headers=right)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0, r.text
        r = guesser.post("/api/v1/api-keys", headers=right, json={"name": "while blocked"})
        assert r.status_code == 429, r.text
    with from_address("127.0.0.7", base_url=server.url) as other:
        assert other.get("/api/v1/tenants/me", headers=right).status_code == 200


def test_operator_key_guessing_is_throttled(server, tenant_a):
    """Wrong operator keys count against the address like wrong API keys: 403 five times, then 429,
    then even the right operator key waits. The right key from another address works."""
    with from_address("127.0.0.8", base_url=server.url) as guesser:
        codes = [guesser.get("/api/v1/admin/billing/reconcile",
                             headers={"Authorization": f"Bearer op-guess-{i}"}).status_code for i in range(7)]
        assert codes == [403] * 5 + [429] * 2, codes
        r = guesser.get("/api/v1/admin/billing/reconcile", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        r = guesser.post("/api/v1/admin/billing/grants", headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
                         json={"tenant_id": tenant_a["tenant_id"], "amount_usd": "1"})
        assert r.status_code == 429, r.text
    with from_address("127.0.0.9", base_url=server.url) as operator:
        r = operator.get("/api/v1/admin/billing/reconcile", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
        assert r.status_code == 200, r.text
