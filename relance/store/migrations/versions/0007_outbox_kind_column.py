"""outbox kind column: what a message is (lead | internal | webhook) becomes a declared column

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 09:00:00

Until this revision the kind lived in the `options` JSON (`{"kind": "internal", ...}`), read back by its key.
`outbox.kind` is added (NOT NULL, default `lead`, a CHECK naming the three kinds), filled from the JSON of every
existing row, and the key is removed from the JSON; the downgrade puts it back.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

KINDS = "('lead', 'internal', 'webhook')"
# per backend: the JSON's kind, the JSON without it, the JSON with the column put back in it
SQL = {
    'sqlite': ("json_extract(options, '$.kind')", "json_remove(options, '$.kind')", "json_set(options, '$.kind', kind)"),
    'postgresql': ("options->>'kind'", "(options::jsonb - 'kind')::json",
                   "(options::jsonb || jsonb_build_object('kind', kind))::json"),
}


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                      server_default='lead'))
        batch_op.create_check_constraint('ck_outbox_kind', f"kind IN {KINDS}")
    kind, without, _ = SQL[op.get_bind().dialect.name]
    op.execute(f"UPDATE outbox SET kind = {kind}, options = {without} WHERE {kind} IN {KINDS}")


def downgrade() -> None:
    _, _, with_kind = SQL[op.get_bind().dialect.name]
    op.execute(f"UPDATE outbox SET options = {with_kind}")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('ck_outbox_kind', type_='check')
        batch_op.drop_column('kind')
