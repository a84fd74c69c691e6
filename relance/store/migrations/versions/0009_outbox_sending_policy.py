"""outbox sending policy: what the caps count, the scenario's priority, and what the policy holds back

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:00:00

sending.yaml (relance.sending) caps marketing email per lead across scenarios and keeps quiet hours: every outbox
row says whether it is marketing (`marketing`, true for every row written before, except staff mail and webhooks),
its scenario's `priority`, until when the policy holds it back (`hold_until`) and why it last did (`held`).
An index on (lead_id, attempted_at) lets the caps count a lead's recent sends.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('marketing', sa.Boolean(), nullable=False, server_default=sa.text('true')))
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default='50'))
        batch_op.add_column(sa.Column('hold_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('held', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.create_index('ix_outbox_lead_attempted', ['lead_id', 'attempted_at'], unique=False)
    op.execute("UPDATE outbox SET marketing = false WHERE kind <> 'lead'")


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_lead_attempted')
        batch_op.drop_column('held')
        batch_op.drop_column('hold_until')
        batch_op.drop_column('priority')
        batch_op.drop_column('marketing')
