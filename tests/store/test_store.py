"""The store on both backends: migrations, idempotent events and outbox, SKIP LOCKED claims."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from relance.scenario.model import Scenario
from relance.scenario.plan import compile_scenario
from relance.store.db import alembic_config, make_engine
from relance.store.repo import (
    claim_due_enrollments,
    ensure_scenario_version,
    insert_outbox_rows,
    record_events,
    upsert_lead,
    write_back,
)
from relance.scoring.ledger import ScoreLedger
from relance.store.tables import Enrollment, Event, Lead, Outbox, ScoreChange

PLAN = compile_scenario(Scenario.model_validate(
    {"scenario": "s", "trigger": {"event": "downloaded"}, "steps": [{"id": "a", "send": "t", "subject": "x"}]}
))


def test_migrations_create_exactly_the_tables_of_the_models(engine):
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []
    assert {"lead", "event", "scenario_version", "enrollment", "outbox", "step_log"} <= set(inspect(engine).get_table_names())


def test_downgrade_to_base_drops_everything(db_url):
    engine = make_engine(db_url)
    command.upgrade(alembic_config(engine), "head")
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_times_come_back_timezone_aware_utc(session, clock):
    lead = upsert_lead(session, email="  Lea@ACME.example ", now=clock.now(), first_name="Léa")
    session.commit()
    session.expire_all()
    stored = session.get(Lead, lead.id)
    assert stored.email == "lea@acme.example"
    assert stored.created_at == clock.now() and stored.created_at.tzinfo is not None


def test_an_event_is_stored_once_per_idempotency_key_even_twice_in_one_batch(session, clock):
    lead = upsert_lead(session, email="a@b.example", now=clock.now())
    session.flush()
    row = lambda key: dict(lead_id=lead.id, type="downloaded", occurred_at=clock.now(), properties={"asset": "x"},  # noqa: E731
                           idempotency_key=key, received_at=clock.now())
    first = record_events(session, [row("k1"), row("k2"), row("k1")])
    again = record_events(session, [row("k1"), row("k3")])
    assert set(first) == {"k1", "k2"} and set(again) == {"k3"}
    assert session.exec(select(func.count()).select_from(Event)).one()[0] == 3


def _enroll(session, lead, version, due_at):
    enrollment = Enrollment(lead_id=lead.id, scenario="s", version_id=version.id, step_id="a", due_at=due_at, entered_at=due_at)
    session.add(enrollment)
    session.flush()
    return enrollment


def test_outbox_rows_are_unique_per_enrollment_step_and_visit(session, clock):
    lead = upsert_lead(session, email="a@b.example", now=clock.now())
    version = ensure_scenario_version(session, plan=PLAN, source_path="s.yaml", now=clock.now())
    assert ensure_scenario_version(session, plan=PLAN, source_path="s.yaml", now=clock.now()).id == version.id
    enrollment = _enroll(session, lead, version, clock.now())
    row = dict(enrollment_id=enrollment.id, step_id="a", visit=0, lead_id=lead.id, template="t", to_address=lead.email,
               created_at=clock.now(), options={})
    insert_outbox_rows(session, [row])
    insert_outbox_rows(session, [row, {**row, "visit": 1}])
    from relance.store.tables import Outbox
    assert sorted(o.visit for o in session.exec(select(Outbox)).scalars()) == [0, 1]


def test_only_due_enrollments_are_claimed_oldest_first(session, clock):
    a, b, c = (upsert_lead(session, email=f"{name}@b.example", now=clock.now()) for name in "abc")
    version = ensure_scenario_version(session, plan=PLAN, source_path="s.yaml", now=clock.now())
    late = _enroll(session, a, version, clock.now() - timedelta(hours=1))
    early = _enroll(session, b, version, clock.now() - timedelta(hours=2))
    _enroll(session, c, version, clock.now() + timedelta(hours=1))
    session.commit()
    assert [e.id for e in claim_due_enrollments(session, scenario="s", now=clock.now(), limit=10)] == [early.id, late.id]


def test_two_ticks_never_claim_the_same_enrollments_on_postgresql(engine, clock, db_url):
    if not db_url.startswith("postgresql"):
        return  # SQLite serialises writers instead; SKIP LOCKED is a PostgreSQL feature
    with Session(engine) as session:
        version = ensure_scenario_version(session, plan=PLAN, source_path="s.yaml", now=clock.now())
        for n in range(6):
            _enroll(session, upsert_lead(session, email=f"{n}@b.example", now=clock.now()), version, clock.now())
        session.commit()
    with Session(engine) as first, Session(engine) as second:
        a = {e.id for e in claim_due_enrollments(first, scenario="s", now=clock.now(), limit=4)}
        b = {e.id for e in claim_due_enrollments(second, scenario="s", now=clock.now(), limit=4)}
        assert len(a) == 4 and len(b) == 2 and not a & b


def test_write_back_updates_each_row_whether_it_shares_its_values_or_not(session, clock):
    version = ensure_scenario_version(session, plan=PLAN, source_path="s.yaml", now=clock.now())
    rows = [_enroll(session, upsert_lead(session, email=f"{n}@b.example", now=clock.now()), version, clock.now())
            for n in range(5)]
    session.commit()
    later = clock.now() + timedelta(days=3)
    same = {"step_id": "b", "due_at": later, "state": {"visits": {"a": 1}}}
    write_back(session, Enrollment.__table__, [
        {"id": rows[0].id, **same}, {"id": rows[1].id, **same}, {"id": rows[2].id, **same},
        {"id": rows[3].id, "step_id": "c", "due_at": None, "state": {"visits": {"a": 2}}},
        {"id": rows[4].id, "status": "done"},
    ])
    session.commit()
    session.expire_all()
    got = {e.id: (e.step_id, e.due_at, e.state, e.status) for e in session.exec(select(Enrollment)).scalars()}
    assert [got[r.id] for r in rows] == [("b", later, {"visits": {"a": 1}}, "active")] * 3 + [
        ("c", None, {"visits": {"a": 2}}, "active"), ("a", clock.now(), {}, "done")]


def test_score_changes_are_written_when_the_ledger_is_and_forgotten_on_rollback(session, clock):
    lead = upsert_lead(session, email="a@b.example", now=clock.now())
    session.commit()
    ledger = ScoreLedger(session)
    ledger.add(lead, 5, cause="page_visited", now=clock.now())
    ledger.add(lead, 3, cause="email_clicked", now=clock.now())
    assert session.exec(select(func.count()).select_from(ScoreChange)).one()[0] == 0  # nothing behind the caller's back
    assert ledger.write() == 2
    ledger_rows = session.exec(select(ScoreChange.points, ScoreChange.score_after)).all()
    assert [tuple(r) for r in ledger_rows] == [(5, 5), (3, 8)]
    session.rollback()
    with ScoreLedger(session) as ledger:  # written on a clean exit
        ledger.add(session.get(Lead, lead.id), 1, cause="page_visited", now=clock.now())
    assert session.exec(select(func.count()).select_from(ScoreChange)).one()[0] == 1
    session.rollback()  # nothing of it may leak into the next transaction
    session.commit()
    assert session.exec(select(func.count()).select_from(ScoreChange)).one()[0] == 0
    assert session.get(Lead, lead.id).score == 0


def test_migration_0007_moves_the_outbox_kind_from_the_json_to_its_column_and_back(db_url, clock):
    engine = make_engine(db_url)
    config = alembic_config(engine)
    command.upgrade(config, "0006")
    stamp = clock.now().replace(tzinfo=None) if db_url.startswith("sqlite") else clock.now()  # as each backend stores it
    old = {  # to_address -> the options a row written before 0007 holds
        "lea@acme.example": {"from": None, "reply_to": None, "preheader": "Pour Léa", "kind": "lead"},
        "ventes@acme.example": {"kind": "internal", "context": {"handoff": {"kind": "handoff"}}},
        "https://crm.example/hook": {"kind": "webhook"},
        "zoe@acme.example": {"preheader": "sans kind"},  # older still: no kind, an email to the lead
    }
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO lead (email, first_name, last_name, job_title, company, sector, country, timezone, language, source, "
            "stage, score, fit, grade, fields, tags, created_at, updated_at) VALUES "
            "('lea@acme.example', 'Léa', '', '', 'ACME', '', 'FR', 'Europe/Paris', 'fr', 's', 'lead', 0, 0, 'D', '{}', '[]', :t, :t)"),
            {"t": stamp})
        for visit, (to, options) in enumerate(old.items()):
            connection.execute(text(
                "INSERT INTO outbox (step_id, visit, lead_id, scenario, template, subject, options, to_address, status, attempts, "
                "created_at) SELECT 's', :v, id, 'nurture', 't', 'x', :o, :to, 'pending', 0, :t FROM lead"),
                {"v": visit, "o": json.dumps(options), "to": to, "t": stamp})

    command.upgrade(config, "head")

    with Session(engine) as session:
        rows = {r.to_address: (r.kind, r.options) for r in session.exec(select(Outbox)).scalars()}
    assert rows == {
        "lea@acme.example": ("lead", {"from": None, "reply_to": None, "preheader": "Pour Léa"}),
        "ventes@acme.example": ("internal", {"context": {"handoff": {"kind": "handoff"}}}),
        "https://crm.example/hook": ("webhook", {}),
        "zoe@acme.example": ("lead", {"preheader": "sans kind"}),
    }
    with pytest.raises(IntegrityError), engine.begin() as connection:  # the column holds one of the three kinds only
        connection.execute(text("UPDATE outbox SET kind = 'pigeon'"))

    command.downgrade(config, "0006")

    with engine.connect() as connection:
        back = {to: json.loads(o) if isinstance(o, str) else o
                for to, o in connection.execute(text("SELECT to_address, options FROM outbox")).all()}
    assert back == {**old, "zoe@acme.example": {"preheader": "sans kind", "kind": "lead"}}
    engine.dispose()
