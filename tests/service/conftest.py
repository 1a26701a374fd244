"""Service fixtures: one real server a test module, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import os

import pytest

from sysdeps import postgres_url

from .server_proc import ServerProcess

# Both always: without a PostgreSQL server its half is a counted skip (or a failure under `make test`).
BACKENDS = ["sqlite", "postgresql"]


def database_url(backend: str, name: str) -> str | None:
    """A fresh database for each server: SQLite in its home; a new PostgreSQL database."""
    if backend == "sqlite":
        return None
    import psycopg

    base = postgres_url()          # postgresql+psycopg://user@host:port/postgres
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    db = f"tl_{name}_{os.getpid()}".lower()[:60]
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        conn.execute(f'CREATE DATABASE "{db}"')
    return base.rsplit("/", 1)[0] + "/" + db


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    # Modules whose subject does not touch the database's behaviour (the OpenAI client's shapes,
    # the SDK, the sandbox, file handling) say SQLITE_ONLY = True: the suite stays within its
    # time budget, and every database-facing module still runs on both backends.
    if request.param != "sqlite" and getattr(request.module, "SQLITE_ONLY", False):
        pytest.skip("database-independent module: run on SQLite only")
    if request.param == "postgresql":
        postgres_url()
    return request.param


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory, request):
    name = request.module.__name__.rsplit(".", 1)[-1]
    home = tmp_path_factory.mktemp(f"srv-{backend}")
    srv = ServerProcess(home, database_url(backend, name)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tenant_a(server) -> dict:
    return server.create_tenant("tenant-a", "a@a.test")


@pytest.fixture(scope="module")
def tenant_b(server) -> dict:
    return server.create_tenant("tenant-b", "b@b.test")


@pytest.fixture(scope="module")
def client_a(server, tenant_a):
    with server.client(tenant_a["api_key"]) as c:
        yield c


@pytest.fixture(scope="module")
def client_b(server, tenant_b):
    with server.client(tenant_b["api_key"]) as c:
        yield c
