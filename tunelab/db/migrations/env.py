"""Alembic environment: runs on the connection tunelab hands it (db.engine.migrate)."""

from alembic import context

from tunelab.db.models import Base

connection = context.config.attributes.get("connection")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
