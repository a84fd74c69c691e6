"""suppression email hash: the list recognises an address by its sha256, so a forgotten person leaves only that

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:30:00

`suppression.email_hash` (sha256 hex of the normalised address, no key: relance.suppression.address_hash) is added,
filled for every existing row, made NOT NULL and unique; every door that checks the list looks addresses up by it.
An erased person's row (`relance lead forget`) keeps the hash only: its `email` holds `sha256:<hash>`.
"""
import hashlib

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def _hash(email: str) -> str:
    """As relance.suppression.address_hash (a migration never imports the code that changes after it)."""
    return email[len("sha256:"):] if email.startswith("sha256:") else hashlib.sha256(email.strip().lower().encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table('suppression', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    connection = op.get_bind()
    table = sa.table('suppression', sa.column('email', sa.String), sa.column('email_hash', sa.String))
    emails = [row.email for row in connection.execute(sa.select(table.c.email))]
    if emails:
        connection.execute(table.update().where(table.c.email == sa.bindparam('_email')).values(email_hash=sa.bindparam('_hash')),
                           [{'_email': e, '_hash': _hash(e)} for e in emails])
    with op.batch_alter_table('suppression', schema=None) as batch_op:
        batch_op.alter_column('email_hash', existing_type=sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False)
        batch_op.create_index(batch_op.f('ix_suppression_email_hash'), ['email_hash'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('suppression', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_suppression_email_hash'))
        batch_op.drop_column('email_hash')
