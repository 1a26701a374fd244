"""deployments: tuned models served from processes of their own, and the tokens they generated
counted on the billing account (charged from the price sheet's serving.per_1k_tokens)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=True),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("idle_seconds", sa.Float(), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("batch_window_ms", sa.Float(), nullable=False),
        sa.Column("requests_served", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deployments_tenant_id", "deployments", ["tenant_id"])
    with op.batch_alter_table("billing_accounts") as batch:
        batch.add_column(sa.Column("served_tokens", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("served_billed_tokens", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("billing_accounts") as batch:
        batch.drop_column("served_billed_tokens")
        batch.drop_column("served_tokens")
    op.drop_index("ix_deployments_tenant_id", table_name="deployments")
    op.drop_table("deployments")
