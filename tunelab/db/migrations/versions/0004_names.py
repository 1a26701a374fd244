"""names: a human name on datasets and tuned models (ids stay as they are)

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("name", sa.String(length=120), server_default="", nullable=False))
    with op.batch_alter_table("tuned_models") as batch:
        batch.add_column(sa.Column("name", sa.String(length=120), server_default="", nullable=False))
    _backfill(op.get_bind())


def _backfill(conn) -> None:
    """Existing rows: a dataset is called by its file name without the suffix, a tuned model
    "<its dataset's name> — <strategy>" (what new rows get when nobody names them)."""
    from tunelab.db.models import default_dataset_name

    datasets = sa.table("datasets", sa.column("id", sa.String), sa.column("filename", sa.String),
                        sa.column("name", sa.String))
    names = {}
    for row in conn.execute(sa.select(datasets.c.id, datasets.c.filename)).all():
        names[row.id] = default_dataset_name(row.filename)
        conn.execute(datasets.update().where(datasets.c.id == row.id).values(name=names[row.id]))
    tuned = sa.table("tuned_models", sa.column("id", sa.String), sa.column("job_id", sa.String),
                     sa.column("strategy", sa.String), sa.column("name", sa.String))
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.JSON))
    rows = conn.execute(sa.select(tuned.c.id, tuned.c.strategy, jobs.c.spec)
                        .select_from(tuned.outerjoin(jobs, jobs.c.id == tuned.c.job_id))).all()
    for row in rows:
        spec = row.spec if isinstance(row.spec, dict) else {}
        base = names.get(spec.get("dataset_id"), "Model")
        name = f"{base} — {str(row.strategy).replace('-', ' ')}"[:120]
        conn.execute(tuned.update().where(tuned.c.id == row.id).values(name=name))


def downgrade() -> None:
    with op.batch_alter_table("tuned_models") as batch:
        batch.drop_column("name")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("name")
