"""Engine, sessions and migrations. SQLite by default (WAL, synchronous=NORMAL, a busy timeout,
foreign keys on); PostgreSQL through TUNELAB_DATABASE_URL. The schema is only ever changed by Alembic.

Both backends get the same connection pool: POOL_SIZE kept, up to MAX_OVERFLOW more under load.
A request holds its connection across several threadpool hops (FastAPI's sync dependencies and
endpoint), so more requests in flight than POOL_SIZE + MAX_OVERFLOW can leave every threadpool
thread waiting for a connection that only a request waiting for a thread can give back (a stall
until the pool timeout, then 500s): the API must keep the requests in flight below POOL_LIMIT."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
POOL_SIZE, MAX_OVERFLOW = 20, 20
POOL_LIMIT = POOL_SIZE + MAX_OVERFLOW      # connections one process may hold at once


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # the same pool as PostgreSQL (SQLAlchemy's default for a SQLite file is 5 + 10)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):   # WAL: readers never wait for the worker's writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit appends to the WAL without an fsync (checkpoints still sync);
            # never corrupts, and only a power loss (not a crash) can lose the last commits.
            # FULL, the default, fsyncs every commit: 3.3 ms a write transaction on this disk against
            # 0.03 ms, and writers queue behind each other (benchmarks/bench_service.py).
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
        return engine
    return create_engine(url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_pre_ping=True)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def migrate(engine: Engine) -> None:
    """Apply every Alembic migration not yet applied (idempotent, safe at each start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise
