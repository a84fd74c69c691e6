"""bigint revenue and score: a company's revenue and a lead's score may pass 2,147,483,647

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:00:00

On PostgreSQL `lead.company_revenue`, `lead.score` and `score_change.score_after` become BIGINT (the tables are
rewritten once, their rows kept). On SQLite an INTEGER already holds 64 bits: nothing to do.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

WIDENED = (('lead', 'company_revenue', True), ('lead', 'score', False), ('score_change', 'score_after', False))
INT_MAX = 2**31 - 1


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        return
    for table, column, nullable in WIDENED:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=nullable)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        return
    for table, column, nullable in WIDENED:
        over = op.get_bind().execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE abs({column}) > {INT_MAX}")).scalar()
        if over:  # an INTEGER cannot hold them: refuse rather than lose them
            raise RuntimeError(f"cannot downgrade below 0006: {over} row(s) of {table}.{column} hold more than {INT_MAX:,}")
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=nullable)
