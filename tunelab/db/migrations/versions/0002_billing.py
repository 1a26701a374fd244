"""billing: ledger, accounts, job billing, quotas, calibration

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:25:59.756324
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_calibration',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('factor', sa.Float(), nullable=False),
    sa.Column('wall_factor', sa.Float(), nullable=False),
    sa.Column('spread', sa.Float(), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('billing_accounts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('available', sa.BigInteger(), nullable=False),
    sa.Column('reserved', sa.BigInteger(), nullable=False),
    sa.Column('spent', sa.BigInteger(), nullable=False),
    sa.Column('granted', sa.BigInteger(), nullable=False),
    sa.Column('lock_version', sa.Integer(), nullable=False),
    sa.Column('storage_charged_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('storage_remainder', sa.BigInteger(), nullable=False),
    sa.Column('served_requests', sa.BigInteger(), nullable=False),
    sa.Column('served_billed_requests', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', name='uq_billing_accounts_tenant')
    )
    with op.batch_alter_table('billing_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_accounts_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('ledger_entries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('debit', sa.String(length=24), nullable=False),
    sa.Column('credit', sa.String(length=24), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('category', sa.String(length=16), nullable=True),
    sa.Column('quantity', sa.BigInteger(), nullable=True),
    sa.Column('unit', sa.String(length=24), nullable=True),
    sa.Column('step_from', sa.Integer(), nullable=True),
    sa.Column('step_to', sa.Integer(), nullable=True),
    sa.Column('price_version', sa.String(length=40), nullable=True),
    sa.Column('dedupe_key', sa.String(length=120), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('memo', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.CheckConstraint('amount > 0', name='ck_ledger_entries_amount_positive'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_entries_job_id'), ['job_id'], unique=False)
        batch_op.create_index('ix_ledger_entries_tenant_created', ['tenant_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entries_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('tenant_quotas',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('concurrent_jobs', sa.Integer(), nullable=True),
    sa.Column('gpus', sa.Integer(), nullable=True),
    sa.Column('storage_bytes', sa.BigInteger(), nullable=True),
    sa.Column('dataset_bytes', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=100), nullable=True),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', name='uq_tenant_quotas_tenant')
    )
    with op.batch_alter_table('tenant_quotas', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tenant_quotas_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('job_billing',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('device', sa.String(length=32), nullable=False),
    sa.Column('price_version', sa.String(length=40), nullable=False),
    sa.Column('estimate', sa.JSON(), nullable=False),
    sa.Column('estimate_cost', sa.BigInteger(), nullable=False),
    sa.Column('estimate_low', sa.BigInteger(), nullable=False),
    sa.Column('estimate_high', sa.BigInteger(), nullable=False),
    sa.Column('reserved', sa.BigInteger(), nullable=False),
    sa.Column('charged', sa.BigInteger(), nullable=False),
    sa.Column('metered_ms', sa.BigInteger(), nullable=False),
    sa.Column('billed_ms', sa.BigInteger(), nullable=False),
    sa.Column('charge_remainder', sa.BigInteger(), nullable=False),
    sa.Column('frontier_pos', sa.Integer(), nullable=False),
    sa.Column('frontier_ms', sa.BigInteger(), nullable=False),
    sa.Column('meter_seq', sa.Integer(), nullable=False),
    sa.Column('wall_ms', sa.BigInteger(), nullable=False),
    sa.Column('actual', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('job_billing', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_billing_tenant_id'), ['tenant_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('job_billing', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_billing_tenant_id'))

    op.drop_table('job_billing')
    with op.batch_alter_table('tenant_quotas', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tenant_quotas_tenant_id'))

    op.drop_table('tenant_quotas')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_entries_tenant_id'))
        batch_op.drop_index('ix_ledger_entries_tenant_created')
        batch_op.drop_index(batch_op.f('ix_ledger_entries_job_id'))

    op.drop_table('ledger_entries')
    with op.batch_alter_table('billing_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_accounts_tenant_id'))

    op.drop_table('billing_accounts')
    op.drop_table('billing_calibration')
