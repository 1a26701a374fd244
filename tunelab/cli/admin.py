"""Operator commands: `tunelab worker` and `tunelab admin ...` (run on the server's machine,
against its database: they need no API key)."""

from __future__ import annotations

import json
import os
import signal

from .common import open_database
from .errors import UsageError
from .exits import EXIT_CONFIG, EXIT_ERROR, EXIT_OK


def extend(sub, groups) -> None:
    worker = sub.add_parser("worker", help="run a job worker against the database (TUNELAB_DATABASE_URL)")
    worker.add_argument("--executor", choices=["sandbox", "ray"], default="sandbox",
                        help="where jobs run: this machine, sandboxed (default); or the nodes of a Ray cluster, "
                        "sandboxed on each node")
    worker.add_argument("--ray-address", default=os.environ.get("TUNELAB_RAY_ADDRESS"),
                        help="the Ray head's IP:PORT (with --executor ray; default TUNELAB_RAY_ADDRESS)")
    worker.set_defaults(func=cmd_worker)
    _extend_ray(sub)
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
    executor = _ray_executor(args, settings) if args.executor == "ray" else None
    worker = Worker(settings, db, executor)      # SandboxUnavailable: exit 2, errors.guarded
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


# ---- a Ray cluster (jobs/executors/ray_setup.py: token auth, private address, no dashboard) ----
def _extend_ray(sub) -> None:
    ray = sub.add_parser("ray", help="start or join a Ray cluster for `tunelab worker --executor ray`") \
        .add_subparsers(dest="ray_action", required=True)
    head = ray.add_parser("start-head", help="start this machine as the cluster's head (token authentication "
                          "on, no dashboard); it runs no jobs unless given --num-cpus")
    head.add_argument("--port", type=int, default=6379)
    head.set_defaults(func=cmd_ray_start_head)
    join = ray.add_parser("join", help="join this machine to the cluster as a node that runs jobs")
    join.add_argument("head", help="the head's IP:PORT, as `tunelab ray start-head` printed it")
    join.set_defaults(func=cmd_ray_join)
    for p in (head, join):
        p.add_argument("--address", help="this node's private IP (default: the one Ray detects); never 0.0.0.0")
        p.add_argument("--allow-public-address", action="store_true",
                       help="accept a public --address (only behind a firewall admitting the cluster's nodes alone)")
        p.add_argument("--num-cpus", type=int, help="CPUs this node offers to jobs (head default 0: runs none)")
        p.add_argument("--num-gpus", type=int)
        p.add_argument("--object-store-mb", type=int)
        p.add_argument("--block", action="store_true", help="stay in the foreground (for a service manager)")
        p.add_argument("--ray-option", action="append", default=[], metavar="OPTION",
                       help="one more `ray start` option, repeatable (e.g. --ray-option=--node-manager-port=6380 "
                       "to fix a port for a firewall)")
    ray.add_parser("token", help="where the cluster token is (copy it to each node, mode 600)") \
        .set_defaults(func=cmd_ray_token)


def _ray_options(args, default_cpus: int | None):
    from ..jobs.executors.ray_setup import NodeOptions, RaySetupError, node_address

    try:
        address = node_address(args.address, allow_public=args.allow_public_address)
    except RaySetupError as exc:
        raise UsageError(str(exc)) from None
    return NodeOptions(address, args.num_cpus if args.num_cpus is not None else default_cpus, args.num_gpus,
                       args.object_store_mb, block=args.block, extra=list(args.ray_option))


def _run_ray(argv: list[str], env: dict) -> int:
    """`ray start`; with --block it replaces this process, so a service manager's signals reach it."""
    import subprocess

    if "--block" in argv:
        os.execve(argv[0], argv, env)      # safe: argv list, no shell
    return subprocess.run(argv, env=env).returncode  # safe: argv list, no shell


def cmd_ray_start_head(args) -> int:
    from ..jobs.executors.ray_setup import RaySetupError, auth_env, ensure_token, head_argv
    from ..settings import Settings

    home = Settings().home
    path = ensure_token(home)
    opts = _ray_options(args, default_cpus=0)
    try:
        argv = head_argv(opts, args.port)
    except RaySetupError as exc:
        raise UsageError(str(exc)) from None
    if args.block:
        print(f"Ray head at {opts.address}:{args.port}; token in {path} (mode 600).", flush=True)
    code = _run_ray(argv, auth_env(home))
    if code == 0:
        print(f"Ray head at {opts.address}:{args.port} (token authentication on; token in {path}, mode 600).")
        print(f"On each node: copy {path} to its TUNELAB_HOME/ray/auth_token, then "
              f"`tunelab ray join {opts.address}:{args.port}`.")
        print(f"Worker: `tunelab worker --executor ray --ray-address {opts.address}:{args.port}`.")
    return EXIT_OK if code == 0 else EXIT_ERROR


def cmd_ray_join(args) -> int:
    from ..jobs.executors.ray_setup import RaySetupError, auth_env, join_argv
    from ..settings import Settings

    try:
        argv = join_argv(args.head, _ray_options(args, default_cpus=None))
        env = auth_env(Settings().home)
    except RaySetupError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK if _run_ray(argv, env) == 0 else EXIT_ERROR


def cmd_ray_token(args) -> int:
    from ..jobs.executors.ray_setup import ensure_token
    from ..settings import Settings

    print(ensure_token(Settings().home))       # the path only: the token never goes to a terminal
    return EXIT_OK


def _ray_executor(args, settings):
    """The Ray executor, connected to the cluster with its token; each node checks its own sandbox
    before it runs a job (ray_node.py)."""
    from ..jobs.executors.ray_cluster import RayExecutor
    from ..jobs.executors.ray_setup import RaySetupError, connect

    if not args.ray_address:
        raise UsageError("--executor ray needs --ray-address HEAD_IP:PORT (or TUNELAB_RAY_ADDRESS)")
    try:
        connect(args.ray_address, settings.home)
    except RaySetupError as exc:
        raise UsageError(str(exc)) from None
    return RayExecutor(insecure=settings.insecure_mode, shared_models=settings.shared_models)
