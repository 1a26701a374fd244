"""The FastAPI application: routes, error shape, upload limits, and (optionally) a worker thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..db import Database, migrate
from ..db.engine import POOL_LIMIT
from ..services.predictions import PredictorCache
from ..settings import Settings
from . import errors
from .routes import (audit, batch_predictions, billing, comparisons, datasets, deployments, infrastructure, jobs, keys,
                     models, tenants, users, webhooks)
from .bodies import BodyGate, BodyRule, plausible_key
from .headers import SecurityHeaders, api_headers
from .uploads import upload_rule

log = logging.getLogger("tunelab.api")
# jobs first: its status GET is the call every SDK and UI tab repeats while a job runs, and routes
# are matched in order (the prefixes are disjoint, so the order changes nothing else).
ROUTERS = [jobs, tenants, users, keys, datasets, models, comparisons, webhooks, audit, billing, infrastructure,
           batch_predictions, deployments]


class BoundedRequests:
    """At most `limit` requests inside the app at once; the rest wait here, holding neither a
    worker thread nor a database connection. Without it, more requests in flight than the pool
    has connections deadlock the thread pool (each holds a connection while waiting for a thread
    that waits for a connection) until the pool times out.

    Every request is counted, streams too (their opening checks the key and the job); a response
    that is an event stream gives its slot back once its headers are out: from then on it holds no
    connection and no thread (services.streams feeds it), and its own limits cap how many stay open."""

    def __init__(self, app, limit: int):
        self.app, self.limit, self.sem = app, limit, None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.sem = self.sem or asyncio.Semaphore(self.limit)
        held = True
        await self.sem.acquire()

        async def sending(message):
            nonlocal held
            if held and message["type"] == "http.response.start" and _event_stream(message):
                held = False
                self.sem.release()
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            if held:
                self.sem.release()


def _event_stream(start: dict) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in start.get("headers", ()))


class AccessLog:
    """One JSON line a request (plain ASGI: cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), {}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status.get("code"),
                                       "ms": round((time.perf_counter() - t0) * 1000, 1)})


def _document(app: FastAPI) -> dict:
    """The OpenAPI document, without FastAPI's stock 422 (`HTTPValidationError`, a shape this API
    never sends: its errors are ErrorBody, declared on each route with the statuses it answers)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for item in doc.get("paths", {}).values():
            for op in item.values():
                stock = op.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
                if stock.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    del op["responses"]["422"]      # a /v1 route: it answers 400 instead
        # Every route takes a key (a tenant's, or the operator's on /api/v1/admin/billing).
        doc.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer tl-…"}}
        doc["security"] = [{"apiKey": []}]
        for name in ("HTTPValidationError", "ValidationError"):
            doc.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema


def _supervisor(settings: Settings):
    """The deployments' supervisor; None (deployments answer 503, saying why) where model servers
    cannot be sandboxed and insecure mode is off."""
    from ..jobs.executors import SandboxUnavailable

    try:
        from ..serving.supervisor import Supervisor

        return Supervisor(settings)
    except SandboxUnavailable as exc:
        log.error("no model servers", extra={"reason": str(exc)})
        return None


def create_app(settings: Settings, *, run_worker: bool | None = None) -> FastAPI:
    db = Database(settings.db_url)
    worker_box: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(db.engine)
        app.state.supervisor = _supervisor(settings)     # model servers of deployments, started on demand
        try:
            async with _jobs_worker(app):
                yield
        finally:
            if app.state.supervisor is not None:
                app.state.supervisor.close()
            db.engine.dispose()

    @asynccontextmanager
    async def _jobs_worker(app: FastAPI):
        from ..security.crypto import master_key_in_home

        if master_key_in_home(settings.home):     # a backup of the home would hold the key too
            log.warning("the master key is a file inside TUNELAB_HOME: set TUNELAB_MASTER_KEY_FILE to a "
                        "path on another volume (or TUNELAB_MASTER_KEY from a secret store)")
        if settings.in_process_worker if run_worker is None else run_worker:
            from ..jobs.executors import SandboxUnavailable
            from ..jobs.worker import Worker

            try:
                worker = Worker(settings, db)
            except SandboxUnavailable as exc:     # serve the API; job creation says why it is refused
                log.error("no worker started", extra={"reason": str(exc)})
                app.state.worker_refused = str(exc)      # /readyz names it
                yield
                return
            if settings.insecure_mode:
                log.warning("INSECURE MODE: jobs run unsandboxed (TUNELAB_INSECURE_MODE)")
            thread = threading.Thread(target=worker.run_forever, name="worker", daemon=True)
            thread.start()
            worker_box.update(worker=worker, thread=thread)
            app.state.worker, app.state.worker_thread = worker, thread     # /readyz reads its heartbeat
        yield
        if worker_box:
            worker_box["worker"].stopping.set()
            worker_box["thread"].join(timeout=10)

    app = FastAPI(title="tunelab", version="0.1.0", lifespan=lifespan,
                  description="Adapt open models to your own data: upload, train, compare, serve.")
    app.state.settings, app.state.db, app.state.predictors = settings, db, PredictorCache(home=settings.home)
    app.state.job_streams = jobs.stream_hub(db, settings)     # one poller for every live job stream
    from ..security.ratelimit import RateLimiter

    app.state.limits = {"per_key": RateLimiter(settings.rate_limit_per_key),
                        "failed_auth": RateLimiter(settings.rate_limit_failed_auth)}
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    from .routes import openai_chat, openai_files, openai_jobs, openai_models

    for module in (openai_files, openai_jobs, openai_models, openai_chat):
        app.include_router(module.router)
    # Bodies are capped by route and refused before they are read when the caller has no
    # plausible key (uploads: no valid key); the UI adds its rules to app.state.body_rules.
    app.state.body_rules = [upload_rule(lambda: settings.max_upload_bytes)]
    app.add_middleware(BodyGate, rules=app.state.body_rules,
                       default=BodyRule((), lambda: settings.max_body_bytes, plausible_key))

    app.add_middleware(AccessLog)
    app.add_middleware(BoundedRequests, limit=POOL_LIMIT - 8)
    app.add_middleware(SecurityHeaders, headers_for=api_headers)     # outermost: on every answer

    app.openapi = lambda: _document(app)

    from .routes import health

    app.include_router(health.router)     # /healthz (liveness), /readyz (database, worker, sandbox)

    return app
