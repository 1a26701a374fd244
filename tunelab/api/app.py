"""The FastAPI application: routes, error shape, upload limits, and (optionally) a worker thread."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from ..db import Database, migrate
from ..services.predictions import PredictorCache
from ..settings import Settings
from . import errors
from .routes import audit, billing, comparisons, datasets, jobs, keys, models, tenants, users, webhooks
from .uploads import BodyLimit

log = logging.getLogger("tunelab.api")
ROUTERS = [tenants, users, keys, datasets, models, jobs, comparisons, webhooks, audit, billing]


def create_app(settings: Settings, *, run_worker: bool | None = None) -> FastAPI:
    db = Database(settings.db_url)
    worker_box: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(db.engine)
        if settings.in_process_worker if run_worker is None else run_worker:
            from ..jobs.executors import SandboxUnavailable
            from ..jobs.worker import Worker

            try:
                worker = Worker(settings, db)
            except SandboxUnavailable as exc:     # serve the API; job creation says why it is refused
                log.error("no worker started", extra={"reason": str(exc)})
                yield
                db.engine.dispose()
                return
            if settings.insecure_mode:
                log.warning("INSECURE MODE: jobs run unsandboxed (TUNELAB_INSECURE_MODE)")
            thread = threading.Thread(target=worker.run_forever, name="worker", daemon=True)
            thread.start()
            worker_box.update(worker=worker, thread=thread)
        yield
        if worker_box:
            worker_box["worker"].stopping.set()
            worker_box["thread"].join(timeout=10)
        db.engine.dispose()

    app = FastAPI(title="tunelab", version="0.1.0", lifespan=lifespan,
                  description="Adapt open models to your own data: upload, train, compare, serve.")
    app.state.settings, app.state.db, app.state.predictors = settings, db, PredictorCache(home=settings.home)
    from ..security.ratelimit import RateLimiter

    app.state.limits = {"per_key": RateLimiter(settings.rate_limit_per_key),
                        "failed_auth": RateLimiter(settings.rate_limit_failed_auth)}
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    from .routes import openai_files, openai_jobs, openai_models

    for module in (openai_files, openai_jobs, openai_models):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit_of=lambda: settings.max_upload_bytes,
                       paths=("/api/v1/datasets", "/v1/files", "/api/v1/models/import"))

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        log.info("request", extra={"method": request.method, "path": request.url.path,
                                   "status": response.status_code,
                                   "ms": round((time.perf_counter() - t0) * 1000, 1)})
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz():
        return {"ok": True, "insecure_mode": settings.insecure_mode}

    return app
