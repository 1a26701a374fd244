"""Passwords (issue 22, item 13): scrypt at N=2^17; a hash made at the old N=2^14 still signs in
and is upgraded there; and the time a sign-in takes does not tell whether the email exists or has
a password. On both backends (the upgraded hash must fit the column on PostgreSQL)."""

from __future__ import annotations

import hashlib
import re
import secrets
import statistics
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from service.conftest import database_url
from service.server_proc import ServerProcess

# Hashing does not depend on the database: `make test` on SQLite, `make test-slow` on both.
pytestmark = pytest.mark.slow_on_postgresql

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    # No failed-attempt limit here: the timing test fails on purpose, many times, from one address.
    srv = ServerProcess(tmp_path_factory.mktemp("passwords"), database_url(backend, "passwords"), worker=False,
                        rate_limit_failed_auth=0).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def org(server) -> dict:
    admin = server.create_tenant("pw-org", "admin@pw.test")
    with server.client(admin["api_key"]) as c:
        for email, password in [("has-password@pw.test", PASSWORD), ("no-password@pw.test", None)]:
            r = c.post("/api/v1/users", json={"email": email, "role": "member", "password": password})
            assert r.status_code == 201, r.text
    return admin


def _db(server):
    url = server.env.get("TUNELAB_DATABASE_URL") or f"sqlite:///{server.home / 'tunelab.db'}"
    return create_engine(url)


def _stored(server, email: str) -> str | None:
    engine = _db(server)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT password_hash FROM users WHERE email = :e"), {"e": email}).scalar_one()
    finally:
        engine.dispose()


def _sign_in(c: httpx.Client, email: str, password: str) -> tuple[int, float]:
    """The status of a password sign-in and the seconds the POST took."""
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
    t0 = time.perf_counter()
    r = c.post("/login", data={"csrf_token": token, "method": "password", "email": email, "password": password})
    return r.status_code, time.perf_counter() - t0


def test_new_hashes_use_n_2_17(server, org):
    stored = _stored(server, "has-password@pw.test")
    assert stored.startswith("scrypt$17$8$1$"), stored
    assert len(stored) <= 200


def test_an_old_hash_signs_in_and_is_upgraded(server, org):
    salt = secrets.token_bytes(16)
    old = f"scrypt${salt.hex()}${hashlib.scrypt(b'old-but-valid', salt=salt, n=2**14, r=8, p=1).hex()}"
    engine = _db(server)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET password_hash = :h WHERE email = 'has-password@pw.test'"), {"h": old})
    finally:
        engine.dispose()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert _sign_in(c, "has-password@pw.test", "wrong one")[0] == 401
        assert _stored(server, "has-password@pw.test") == old             # a failed sign-in changes nothing
        assert _sign_in(c, "has-password@pw.test", "old-but-valid")[0] == 303
    upgraded = _stored(server, "has-password@pw.test")
    assert upgraded.startswith("scrypt$17$8$1$") and upgraded != old
    with httpx.Client(base_url=server.url, timeout=60) as c:            # the new hash signs in too
        assert _sign_in(c, "has-password@pw.test", "old-but-valid")[0] == 303


def test_sign_in_time_does_not_tell_whether_an_email_exists(server, org):
    """Medians of interleaved tries: an unknown email and a member without a password take as long
    as a wrong password for a real one (one scrypt each). Before: 12-24 ms against 212 ms."""
    cases = {"unknown email": "nobody-here@pw.test", "no password": "no-password@pw.test",
             "wrong password": "has-password@pw.test"}
    times: dict[str, list[float]] = {name: [] for name in cases}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for _ in range(3):
            for name, email in cases.items():
                status, took = _sign_in(c, email, "not the password")
                assert status == 401, (name, status)
                times[name].append(took)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print({name: f"{m * 1000:.0f} ms" for name, m in medians.items()})
    ratio = max(medians.values()) / min(medians.values())
    assert ratio < 1.6, medians
