"""The audit log records who did what, and `tunelab admin audit verify` catches an edited or a
removed entry."""

from __future__ import annotations

from sqlalchemy import text

from tunelab.db import Database

from service.helpers import upload


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
