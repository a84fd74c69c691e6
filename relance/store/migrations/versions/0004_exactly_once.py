"""exactly once: one active enrollment per lead and scenario, when a message was handed over, suppression list

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00

Databases written before this revision may hold duplicate active enrollments (concurrent ticks
enrolled a lead twice): the newer duplicates are closed as `exited` before the unique index is built.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE enrollment SET status = 'exited', due_at = NULL, waiting = NULL, "
        "exit_reason = 'duplicate enrollment closed by migration 0004' "
        "WHERE status = 'active' AND EXISTS (SELECT 1 FROM enrollment AS older WHERE older.lead_id = enrollment.lead_id "
        "AND older.scenario = enrollment.scenario AND older.status = 'active' AND older.id < enrollment.id)"
    )
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.create_index('uq_enrollment_active', ['lead_id', 'scenario'], unique=True,
                              sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('suppression',
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('email')
    )
    # leads suppressed before this revision are on the list too
    op.execute("INSERT INTO suppression (email, reason, source, at) "
               "SELECT email, suppressed, 'before 0004', updated_at FROM lead WHERE suppressed IS NOT NULL")


def downgrade() -> None:
    op.drop_table('suppression')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('attempted_at')
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.drop_index('uq_enrollment_active', sqlite_where=sa.text("status = 'active'"),
                            postgresql_where=sa.text("status = 'active'"))
