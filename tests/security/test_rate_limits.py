"""Guessing API keys is throttled per client address; one key's request rate is capped."""

from __future__ import annotations

import httpx
import pytest

from service.server_proc import ServerProcess

SQLITE_ONLY = True   # the limiter lives in the server process, not the database


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    from service.conftest import database_url

    srv = ServerProcess(tmp_path_factory.mktemp("limits"), database_url(backend, "limits"),
                        rate_limit_failed_auth=5, rate_limit_per_key=40, worker=False).start()
    yield srv
    srv.stop()


def test_key_guessing_is_throttled(server):
    codes = [httpx.get(server.url + "/api/v1/datasets", headers={"Authorization": f"Bearer tl-{i:010d}.guess"}).status_code
             for i in range(8)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429, codes
    r = httpx.get(server.url + "/api/v1/datasets", headers={"Authorization": "Bearer tl-0000000000.guess"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert r.json()["error"]["code"] == "rate_limited"


def test_one_keys_rate_is_capped(server, tenant_a):
    with server.client(tenant_a["api_key"]) as c:
        codes = [c.get("/api/v1/tenants/me").status_code for _ in range(45)]
    assert codes.count(200) == 40 and codes[-1] == 429, codes
