"""Persistence: tables, engine/sessions/migrations, and the tenant-scoped data-access layer."""

from .engine import Database, is_postgres, migrate
from .models import Base

__all__ = ["Base", "Database", "is_postgres", "migrate"]
