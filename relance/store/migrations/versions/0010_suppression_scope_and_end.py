"""suppression scope and end: the unsubscribe page's preferences are suppressions with a scope and an end

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:00:00

A person may choose, on the unsubscribe page, less than "everything": only the newsletter (`scope` =
`except_newsletter`: every marketing email stops but the scenarios that say `newsletter: true`), or a pause of three
months (`scope` = `all` until `until`). Every row written before is the permanent suppression it was: `scope` `all`,
no `until`.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('suppression', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False, server_default='all'))
        batch_op.add_column(sa.Column('until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('suppression', schema=None) as batch_op:
        batch_op.drop_column('until')
        batch_op.drop_column('scope')
