"""Operator commands: `tunelab worker` and `tunelab admin ...` (run on the server's machine,
against its database: they need no API key)."""

from __future__ import annotations

import json
import signal

from .common import open_database
from .errors import UsageError
from .exits import EXIT_CONFIG, EXIT_ERROR, EXIT_OK


def extend(sub, groups) -> None:
    worker = sub.add_parser("worker", help="run a job worker against the database (TUNELAB_DATABASE_URL)")
    worker.set_defaults(func=cmd_worker)
    admin = sub.add_parser("admin", help="operator commands").add_subparsers(dest="action", required=True)
    groups["admin"] = admin            # billing.extend adds `admin billing ...`
    tenant = admin.add_parser("create-tenant", help="create a tenant and print its admin's first API key")
    tenant.add_argument("name")
    tenant.add_argument("--admin-email", required=True)
    tenant.add_argument("--json", action="store_true")
    tenant.set_defaults(func=cmd_create_tenant)
    delete = admin.add_parser("delete-tenant", help="delete a tenant and all its data (its key is destroyed first)")
    delete.add_argument("tenant_id")
    delete.add_argument("--yes", action="store_true", help="required: this cannot be undone")
    delete.set_defaults(func=cmd_delete_tenant)
    rotate = admin.add_parser("rotate-master-key", help="new master key; rewraps every tenant's data key")
    rotate.set_defaults(func=cmd_rotate_master_key)
    audit = admin.add_parser("audit", help="the audit log").add_subparsers(dest="audit_action", required=True)
    audit.add_parser("verify", help="check every chain against its MACs and its anchors: exit 1 if any entry "
                     "was edited, removed or rewritten, or the newest were cut off") \
        .set_defaults(func=cmd_audit_verify)


def cmd_create_tenant(args) -> int:
    from ..security.audit import record
    from ..services.tenants import create_tenant

    _, db = open_database()
    with db.session() as s:            # a Conflict (the name is taken): exit 2, errors.guarded
        tenant, user, key = create_tenant(s, args.name, args.admin_email)
        record(s, None, "cli", "tenant.create", tenant.id, admin=user.id)
        record(s, tenant.id, "cli", "api_key.create", "first admin key", for_user=user.id)
        out = {"tenant_id": tenant.id, "name": tenant.name, "admin_user_id": user.id, "api_key": key}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"tenant {out['name']} ({out['tenant_id']}); admin {args.admin_email}")
        print(f"API key (shown once, store it now): {key}")
    return EXIT_OK


def cmd_worker(args) -> int:
    from ..jobs.worker import Worker
    from ..logs import configure

    settings, db = open_database()
    configure(settings.log_level, settings.log_json)
    worker = Worker(settings, db)      # SandboxUnavailable: exit 2, errors.guarded
    # SIGTERM/SIGINT: stop claiming; the job in hand finishes, or its lease lets another take it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    worker.run_forever()
    return EXIT_OK


def cmd_audit_verify(args) -> int:
    from ..security.audit import verify

    _, db = open_database()
    with db.session() as s:
        checked, problems = verify(s)
    for p in problems:
        print(f"TAMPERED chain {p.chain} entry {p.seq}: {p.what}")
    print(f"{checked} audit entries checked against their key and anchors: "
          + ("intact" if not problems else f"{len(problems)} problem(s)"))
    return EXIT_ERROR if problems else EXIT_OK


def cmd_delete_tenant(args) -> int:
    from ..services.tenants import delete_tenant, scrub_database

    if not args.yes:
        raise UsageError("deleting a tenant destroys all its data for good; add --yes")
    settings, db = open_database()
    try:
        with db.session() as s:
            delete_tenant(s, settings.home, args.tenant_id)
        with db.session() as s:
            scrub_database(s)      # the deleted rows' old pages out of SQLite's write-ahead log
    except LookupError as exc:         # no such tenant (any LookupError is too broad for errors.py)
        raise UsageError(str(exc), EXIT_CONFIG) from None
    print(f"tenant {args.tenant_id} deleted: its data key destroyed, its files and rows removed")
    return EXIT_OK


def cmd_rotate_master_key(args) -> int:
    """Write the new key next to the old one, rewrap every data key, then replace the old key:
    an interrupted rotation is finished by running the command again."""
    import base64
    import os
    import secrets

    from ..security.audit_anchors import rewrap_key as rewrap_audit_key
    from ..security.crypto import LocalKeyProvider, TenantKeys, master_key_path
    from ..settings import Settings

    settings = Settings()
    if os.environ.get("TUNELAB_MASTER_KEY"):
        raise UsageError("the master key comes from TUNELAB_MASTER_KEY; rotate it in your secret store: run with "
                         "TUNELAB_MASTER_KEY_FILE pointing at a new key file instead")
    path = master_key_path(settings.home)
    staged = path.with_name(path.name + ".new")
    if not staged.exists():
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(32)).decode())
    new = LocalKeyProvider(base64.b64decode(staged.read_text().strip()))
    count = TenantKeys(settings.home).rotate(new)
    rewrap_audit_key(settings.home, new)         # the audit log's key is wrapped by the master key too
    os.replace(staged, path)
    print(f"master key rotated ({new.key_id}); {count} tenant data key(s) rewrapped")
    return EXIT_OK
