"""deals: won and lost deals with their amount, gross margin or lost reason

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00

Leads that reached the `customer` stage before deals were recorded get one won deal each (amount and
margin 0, dated when they first became customers), so that they still count as customers in the economics.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

FIRST_CUSTOMER_AT = "(SELECT MIN(sc.at) FROM stage_change AS sc WHERE sc.lead_id = lead.id AND sc.to_stage = 'customer')"


def upgrade() -> None:
    op.create_table('deal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('amount', sa.Float(), nullable=False),
    sa.Column('margin', sa.Float(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['lead.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('deal', schema=None) as batch_op:
        batch_op.create_index('ix_deal_closed', ['closed_at'], unique=False)
        batch_op.create_index('ix_deal_lead', ['lead_id', 'closed_at'], unique=False)
    op.execute(
        "INSERT INTO deal (lead_id, outcome, kind, amount, margin, note, \"by\", closed_at, recorded_at) "
        "SELECT lead.id, 'won', 'new', 0, 0, 'customer before deals were recorded: amount and margin unknown', 'relance', "
        f"COALESCE({FIRST_CUSTOMER_AT}, lead.updated_at), COALESCE({FIRST_CUSTOMER_AT}, lead.updated_at) "
        f"FROM lead WHERE lead.stage = 'customer' OR {FIRST_CUSTOMER_AT} IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table('deal', schema=None) as batch_op:
        batch_op.drop_index('ix_deal_lead')
        batch_op.drop_index('ix_deal_closed')

    op.drop_table('deal')
