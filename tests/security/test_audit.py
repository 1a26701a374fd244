"""The audit log records who did what, and `tunelab admin audit verify` catches an edited or a
removed entry."""

from __future__ import annotations

import json

import pytest

from sqlalchemy import text

from tunelab.db import Database

from service.helpers import upload

# `make test` runs the chain checks on SQLite; `make test-slow` on PostgreSQL too.
pytestmark = pytest.mark.slow_on_postgresql


def _db(server) -> Database:
    return Database(server.env.get("TUNELAB_DATABASE_URL") or f"sqlite:///{server.home / 'tunelab.db'}")


def test_actions_are_audited_and_an_edit_or_removal_is_detected(server, client_a, tenant_a, banking_subset):
    key = client_a.post("/api/v1/api-keys", json={"name": "k"}).json()
    client_a.delete(f"/api/v1/api-keys/{key['id']}")
    ds = upload(client_a, banking_subset[1])
    user = client_a.post("/api/v1/users", json={"email": "m@a.test", "role": "member"}).json()
    client_a.patch(f"/api/v1/users/{user['id']}", json={"role": "viewer"})
    client_a.get(f"/v1/files/{ds['id']}/content")
    client_a.delete(f"/api/v1/datasets/{ds['id']}")

    log = client_a.get("/api/v1/audit").json()["data"]
    actions = [e["action"] for e in reversed(log)]
    for expected in ("api_key.create", "api_key.revoke", "dataset.upload", "user.create", "user.role_change",
                     "dataset.download", "dataset.delete"):
        assert expected in actions, actions
    change = next(e for e in log if e["action"] == "user.role_change")
    assert change["data"]["old"] == "member" and change["data"]["new"] == "viewer"

    ok = server.run("admin", "audit", "verify", check=False)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stdout + ok.stderr

    db = _db(server)
    with db.engine.begin() as c:     # an insider edits one entry's target
        c.execute(text("UPDATE audit_events SET target = 'someone-else' WHERE action = 'user.role_change'"))
    bad = server.run("admin", "audit", "verify", check=False)
    assert bad.returncode == 1 and "was edited" in bad.stdout, bad.stdout
    with db.engine.begin() as c:     # ... and removes another
        c.execute(text("UPDATE audit_events SET target = :t WHERE action = 'user.role_change'"), {"t": user["id"]})
        c.execute(text("DELETE FROM audit_events WHERE action = 'api_key.revoke'"))
    gone = server.run("admin", "audit", "verify", check=False)
    assert gone.returncode == 1 and "missing" in gone.stdout, gone.stdout
    db.engine.dispose()


def test_only_admins_read_the_audit_log(server, client_a):
    member = client_a.post("/api/v1/users", json={"email": "reader@a.test", "role": "member"}).json()
    key = client_a.post(f"/api/v1/users/{member['id']}/api-keys", json={}).json()["key"]
    with server.client(key) as c:
        assert c.get("/api/v1/audit").status_code == 403


# ---- issue 22, item 7: a keyed chain, anchored outside the database -------------------------------
# An insider with write access to the database (not to the master key, not to the anchors file)
# removes the newest entries of a chain, or edits and rehashes its tail as the old verifier
# computed hashes (plain SHA-256): `audit verify` must name the chain. Other tests of this module
# leave their own damage behind, so each checks the lines about its own tenant's chain.
def _tenant_with_history(server, name: str) -> tuple[dict, list]:
    tenant = server.create_tenant(name, f"admin@{name}.test")
    with server.client(tenant["api_key"]) as c:
        for i in range(4):
            key = c.post("/api/v1/api-keys", json={"name": f"k{i}"}).json()
            c.delete(f"/api/v1/api-keys/{key['id']}")
        log = c.get("/api/v1/audit").json()["data"]
    return tenant, log


def _verdict(server, chain: str) -> tuple[int, list[str]]:
    r = server.run("admin", "audit", "verify", check=False)
    return r.returncode, [line for line in r.stdout.splitlines() if f"chain {chain} " in line]


def test_truncating_the_newest_entries_is_detected(server):
    tenant, log = _tenant_with_history(server, "trunc")
    chain, newest = tenant["tenant_id"], log[0]["seq"]
    assert _verdict(server, chain)[1] == []                  # untouched: nothing to say about it
    db = _db(server)
    with db.engine.begin() as c:     # the last three entries go; the chain still links and hashes
        c.execute(text("DELETE FROM audit_events WHERE chain = :c AND seq > :s"), {"c": chain, "s": newest - 3})
    code, lines = _verdict(server, chain)
    assert code == 1 and any("truncated" in line and f"{newest - 2}..{newest}" in line for line in lines), lines
    with db.engine.begin() as c:     # ... and the whole chain
        c.execute(text("DELETE FROM audit_events WHERE chain = :c"), {"c": chain})
    code, lines = _verdict(server, chain)
    assert code == 1 and any("truncated" in line for line in lines), lines
    db.engine.dispose()


def test_a_tail_edited_and_rehashed_is_detected(server):
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from tunelab.db.audit import AuditEvent
    from tunelab.security.audit import _legacy_digest     # the hash the old verifier accepted

    tenant, log = _tenant_with_history(server, "rehash")
    chain, newest = tenant["tenant_id"], log[0]["seq"]
    db = _db(server)
    with Session(db.engine) as s, s.begin():    # rewrite the last two entries, re-chain and rehash them
        tail = s.scalars(select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq >= newest - 1)
                         .order_by(AuditEvent.seq)).all()
        prev = s.scalar(select(AuditEvent.hash).where(AuditEvent.chain == chain, AuditEvent.seq == newest - 2))
        for e in tail:
            e.target, e.prev_hash = "nothing-happened", prev
            e.hash = prev = _legacy_digest(e)
    code, lines = _verdict(server, chain)
    assert code == 1, lines
    assert any(f"entry {newest - 1}: was edited and rehashed without the audit key" in line for line in lines), lines
    assert any("rewritten" in line for line in lines), lines
    db.engine.dispose()


def test_a_forged_anchor_line_is_detected(server):
    tenant, _ = _tenant_with_history(server, "forge")
    anchors = server.home / "audit" / "anchors.jsonl"
    line = json.loads(anchors.read_text().splitlines()[-1])
    with open(anchors, "a") as f:          # claims a longer chain, signed with a guessed key
        f.write(json.dumps({**line, "seq": line["seq"] + 5, "sig": "0" * 64}) + "\n")
    r = server.run("admin", "audit", "verify", check=False)
    assert r.returncode == 1 and "bad signature" in r.stdout, r.stdout
