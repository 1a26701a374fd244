"""The top of the stack: `tunelab serve` (the API with an in-process worker) and `tunelab demo`
(the same, with a demo tenant and the shared sample datasets uploaded). The `tunelab` console
script enters here so that the CLI below never imports the server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
    from .logs import quiet_libraries

    quiet_libraries()      # no weight-loading bars from the playground's models on the console
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
    """The product as a newcomer should first see it: a demo tenant, every sample dataset, one
    example run (queued here, run by the in-process worker as soon as the server is up) and a
    banner that says what to open and what to try first."""
    os.environ.setdefault("TUNELAB_LOG_JSON", "false")     # a person reads this console, not a log shipper
    from .cli.common import open_database
    from .services.demo import prepare_demo

    settings, db = open_database()
    with db.session() as s:
        ready = prepare_demo(s, settings.home, args.samples)
    base = f"http://{args.host}:{args.port}"
    lines = [
        "",
        "  tunelab demo is ready",
        f"  1. Open {base}/ and sign in with this API key:",
        f"       {ready.key}",
    ]
    if ready.example_job_id:
        lines.append(f"  2. Look at the example run first: {base}/jobs/{ready.example_job_id}")
        lines.append(f"       ({ready.example_what}; {ready.example_state})")
    lines.append(f"  3. Then try your own: Datasets -> {ready.first_dataset or 'upload a file'} -> Train, or Compare strategies")
    if ready.samples:
        lines.append("  Sample datasets uploaded: " + ", ".join(ready.samples))
    for problem in ready.problems:
        lines.append(f"  ! {problem}")
    lines.append(f"  API docs: {base}/docs   Stop: Ctrl-C   (data: {settings.home})")
    print("\n".join(lines) + "\n", flush=True)
    return cmd_serve(args)


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main

    return cli_main(argv, extensions=(extend,))


if __name__ == "__main__":
    sys.exit(main())
