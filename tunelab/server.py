"""The top of the stack: `tunelab serve` (the API with an in-process worker) and `tunelab demo`
(the same, with a demo tenant and the shared sample datasets uploaded). The `tunelab` console
script enters here so that the CLI below never imports the server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SAMPLES = [("sms_spam.tsv", {}), ("banking77_train.csv", {}), ("financial_phrasebank.csv", {})]


def extend(sub, groups) -> None:
    serve = sub.add_parser("serve", help="start the server (API + in-process worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="run workers separately (`tunelab worker`)")
    serve.set_defaults(func=cmd_serve)
    demo = sub.add_parser("demo", help="serve with a demo tenant and sample datasets ready")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--samples", type=Path, default=Path(os.environ.get(
        "TUNELAB_SAMPLES", Path(__file__).resolve().parents[2] / "shared/datasets/text-classification")))
    demo.set_defaults(func=cmd_demo, no_worker=False)


def cmd_serve(args) -> int:
    import uvicorn

    from .api.app import create_app
    from .logs import configure
    from .settings import Settings

    settings = Settings()
    configure(settings.log_level, settings.log_json)
    app = create_app(settings, run_worker=not args.no_worker)
    from .web import mount

    mount(app)      # the web UI: a layer above the API, added here so the API never imports it
    print(f"tunelab serving on http://{args.host}:{args.port}  (web UI: /, API docs: /docs; data: {settings.home})",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def cmd_demo(args) -> int:
    from .cli_admin import _database
    from .db.models import Dataset, Tenant
    from .services.datasets import import_dataset
    from .services.tenants import create_key, create_tenant
    from .db.models import User
    import shutil
    import tempfile

    settings, db = _database()
    with db.session() as s:
        tenant = s.query(Tenant).filter_by(name="demo").first()
        if tenant is None:
            tenant, user, key = create_tenant(s, "demo", "demo@example.com")
        else:
            user = s.query(User).filter_by(tenant_id=tenant.id, role="admin").first()
            key, _ = create_key(s, user, "demo")
        have = {d.filename for d in s.query(Dataset).filter_by(tenant_id=tenant.id)}
        for name, columns in SAMPLES:
            src = args.samples / name
            if src.is_file() and name not in have:
                tmp = Path(tempfile.mkdtemp()) / name
                shutil.copy(src, tmp)
                try:
                    import_dataset(s, tenant.id, settings.home, tmp, name, **columns)
                except Exception as exc:     # a sample that does not import is not fatal to a demo
                    print(f"sample {name} not imported: {exc}", file=sys.stderr)
                shutil.rmtree(tmp.parent, ignore_errors=True)
    print(f"\n  demo tenant ready. API key: {key}\n  open http://{args.host}:{args.port}/ and sign in with it\n", flush=True)
    return cmd_serve(args)


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main

    return cli_main(argv, extensions=(extend,))


if __name__ == "__main__":
    sys.exit(main())
