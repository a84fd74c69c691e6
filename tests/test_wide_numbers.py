"""Numbers past 2**31 on both backends: a large company's revenue (5 000 000 000 €) comes in at every door, a lead's
score adds up past 2,147,483,647 through thousands of events, and migration 0006 widens a database made at 0005,
keeping its rows. PostgreSQL's INTEGER holds 32 bits; these columns are BIGINT there (SQLite's INTEGER has 64)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from alembic import command
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text, update
from sqlmodel import Session
from typer.testing import CliRunner

from relance.api.app import create_app
from relance.cli import app
from relance.email.templates import TemplateLibrary
from relance.inputs import REVENUE_MAX, checked_revenue
from relance.settings import get_settings
from relance.store.db import alembic_config, make_engine
from relance.store.repo import upsert_lead
from relance.store.tables import Lead, ScoreChange
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import professional

NOW = "2026-01-05T09:00:00+00:00"
BIG = 5_000_000_000  # a large company's yearly revenue, in euros
INT32 = 2**31 - 1
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def relance(*args: str):
    return CliRunner().invoke(app, list(args))


def _lead(engine, email: str) -> Lead:
    with Session(engine) as session:
        return session.exec(select(Lead).where(Lead.email == email)).scalars().one()


@pytest.fixture
def api(env, engine, clock):
    """The HTTP API on `env`'s project, a contract signed worth a million points (the most a rule may give)."""
    scoring = env / "scenarios" / "scoring.yaml"
    scoring.write_text(scoring.read_text(encoding="utf-8").replace(
        "  demo_requested: 50\n", "  demo_requested: 50\n  contract_signed: 1000000\n  contract_broken: -1000000\n"), encoding="utf-8")
    settings = get_settings().model_copy(update={"api_token": TOKEN, "transport": "null"})
    workspace = load_workspace(settings)
    return TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock), raise_server_exceptions=False)


# --------------------------------------------------------------------------- revenue


def test_a_revenue_of_five_billion_comes_in_through_import_event_and_api(env, engine, api):
    leads = env / "leads.csv"
    leads.write_text("email,company,company_revenue\nbig@acme.example,ACME,5Md\nexact@acme.example,ACME,5 000 000 000\n",
                     encoding="utf-8")
    imported = relance("import", str(leads), "--now", NOW, "--basis", "legitimate_interest")
    assert imported.exit_code == 0 and imported.stderr == "", imported.output
    said = relance("event", "form_submitted", "--lead", "cli@acme.example", "--prop", "company_revenue=5000000000", "--now", NOW)
    assert said.exit_code == 0, said.output
    for email, revenue in (("api@acme.example", BIG), ("float@acme.example", 5e9), ("cap@acme.example", REVENUE_MAX)):
        posted = api.post("/events", json={"type": "form_submitted", "email": email, "properties": {"company_revenue": revenue}},
                          headers=AUTH)
        assert posted.status_code == 200, posted.text

    for email in ("big@acme.example", "exact@acme.example", "cli@acme.example", "api@acme.example", "float@acme.example"):
        assert _lead(engine, email).company_revenue == BIG, email
    assert _lead(engine, "cap@acme.example").company_revenue == REVENUE_MAX
    shown = json.loads(relance("lead", "show", "big@acme.example", "--json").output)
    assert shown["company_revenue"] == BIG and shown["grade"] != "D"  # the revenue tier of scoring.yaml counts it


def test_a_revenue_past_the_cap_is_refused_at_every_door_naming_the_field(env, engine, api):
    leads = env / "leads.csv"
    leads.write_text(f"email,company_revenue\nover@acme.example,{REVENUE_MAX + 1}\n", encoding="utf-8")
    imported = relance("import", str(leads), "--now", NOW)
    assert imported.exit_code == 1
    assert f"{leads}:2: company_revenue: 1 000 000 000 000 001 is more than the largest revenue relance can hold " \
           "(1 000 000 000 000 000)" in imported.stderr
    said = relance("event", "form_submitted", "--lead", "over@acme.example", "--prop", "company_revenue=2000000Md", "--now", NOW)
    assert said.exit_code == 1 and "--prop company_revenue: 2 000 000 000 000 000 is more than the largest revenue" in said.stderr
    posted = api.post("/events", json={"type": "form_submitted", "email": "over@acme.example",
                                       "properties": {"company_revenue": 2e15}}, headers=AUTH)
    assert posted.status_code == 422 and posted.json()["detail"][0]["loc"] == ["body", 0, "properties", "company_revenue"]
    with Session(engine) as session:
        assert session.exec(select(Lead.email)).all() == []


@given(st.integers(min_value=0, max_value=REVENUE_MAX))
def test_every_whole_revenue_up_to_the_cap_is_kept_as_it_is_given(revenue: int) -> None:
    assert checked_revenue(revenue) == revenue
    assert checked_revenue(float(revenue)) == revenue  # below 2**53 a JSON number is exact
    assert checked_revenue(f"{revenue:,}".replace(",", " ")) == revenue


@given(st.integers(min_value=REVENUE_MAX + 1))
def test_every_revenue_past_the_cap_is_refused(revenue: int) -> None:
    with pytest.raises(ValueError, match="is more than the largest revenue relance can hold"):
        checked_revenue(revenue)


# --------------------------------------------------------------------------- score


def test_a_score_adds_up_past_two_to_the_31_through_thousands_of_events(env, engine, api, clock):
    email = "fan@acme.example"
    posted = api.post("/events", json={"type": "form_submitted", "email": email}, headers=AUTH)
    assert posted.status_code == 200, posted.text
    for batch in range(3):  # 3,000 contracts of a million points: 3,000,000,010 in all
        events = [{"type": "contract_signed", "email": email, "idempotency_key": f"c{batch}-{n}"} for n in range(1000)]
        posted = api.post("/events", json=events, headers=AUTH)
        assert posted.status_code == 200, posted.text
    lead = _lead(engine, email)
    assert lead.score == 3_000_000_010
    with Session(engine) as session:
        last = session.exec(select(ScoreChange).where(ScoreChange.lead_id == lead.id).order_by(ScoreChange.id.desc())
                            .limit(1)).scalars().one()
    assert (last.points, last.score_after) == (1_000_000, 3_000_000_010)
    shown = json.loads(relance("lead", "show", email, "--json").output)
    assert shown["score"] == 3_000_000_010


def test_a_score_below_minus_two_to_the_31_is_kept_too(env, engine, api):
    email = "foe@acme.example"
    assert api.post("/events", json={"type": "form_submitted", "email": email}, headers=AUTH).status_code == 200
    with Session(engine) as session:  # as 2,148 broken contracts would leave it
        session.execute(update(Lead).where(Lead.email == email).values(score=-INT32 + 10))
        session.commit()
    posted = api.post("/events", json={"type": "contract_broken", "email": email}, headers=AUTH)
    assert posted.status_code == 200, posted.text
    assert _lead(engine, email).score == -INT32 + 10 - 1_000_000


# --------------------------------------------------------------------------- migration 0006


def test_migration_0006_widens_a_database_made_at_0005_and_keeps_its_rows(db_url, clock):
    engine = make_engine(db_url)
    config = alembic_config(engine)
    command.upgrade(config, "0005")
    stamp = clock.now().replace(tzinfo=None) if db_url.startswith("sqlite") else clock.now()  # as each backend stores it
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO lead (email, first_name, last_name, job_title, company, sector, company_revenue, country, timezone, "
            "language, source, stage, score, fit, grade, fields, tags, created_at, updated_at) VALUES "
            "(:e, 'Léa', '', '', 'ACME', '', :r, 'FR', 'Europe/Paris', 'fr', 's', 'lead', :s, 0, 'D', '{}', '[]', :t, :t)"),
            {"e": "lea@acme.example", "r": INT32, "s": INT32 - 5, "t": stamp})
        connection.execute(text("INSERT INTO score_change (lead_id, points, score_after, cause, detail, at) "
                                "SELECT id, 5, :s, 'downloaded', '', :t FROM lead"), {"s": INT32 - 5, "t": stamp})

    command.upgrade(config, "head")

    with Session(engine) as session:
        lead = session.exec(select(Lead)).scalars().one()
        assert (lead.email, lead.first_name, lead.company_revenue, lead.score) == ("lea@acme.example", "Léa", INT32, INT32 - 5)
        assert session.exec(select(ScoreChange.score_after)).scalars().all() == [INT32 - 5]
        lead.company_revenue, lead.score = BIG, 3_000_000_000  # what the widened columns hold now
        session.add(ScoreChange(lead_id=lead.id, points=1, score_after=3_000_000_000, cause="test", at=clock.now()))
        session.commit()
    with Session(engine) as session:
        assert tuple(session.exec(select(Lead.company_revenue, Lead.score)).one()) == (BIG, 3_000_000_000)
    if engine.dialect.name == "postgresql":  # an INTEGER cannot take them back: the downgrade refuses, nothing lost
        with pytest.raises(RuntimeError, match=r"cannot downgrade below 0006: 1 row\(s\) of lead.company_revenue"):
            command.downgrade(config, "0005")
        with Session(engine) as session:
            assert tuple(session.exec(select(Lead.company_revenue, Lead.score)).one()) == (BIG, 3_000_000_000)
    engine.dispose()


def test_a_score_step_past_two_to_the_31_in_a_tick_is_kept(env, engine, clock):
    """The tick's `score:` step writes the same column: a lead already near the top of 32 bits goes past it."""
    from recording import RecordingTransport  # tests/recording.py
    from relance.plans import sync_scenarios
    from relance.tick import run_tick_inline

    (env / "scenarios" / "bump.yaml").write_text(
        "scenario: bump\ntrigger: {segment: {stage_in: [lead]}}\nsteps:\n  - id: bump\n    score: +1000000\n", encoding="utf-8")
    settings = get_settings().model_copy(update={"transport": "null"})
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        upsert_lead(session, email="near@acme.example", now=clock.now(), fields=professional())
        session.commit()
        session.execute(update(Lead).values(score=INT32 - 10))
        session.commit()
    report = run_tick_inline(engine, settings, scenario="bump", now=clock.now() + timedelta(minutes=1), workspace=workspace,
                             transport=RecordingTransport(), templates=TemplateLibrary(settings.templates_dir))
    assert report.enrollments_failed == 0 and report.advanced == 1
    assert _lead(engine, "near@acme.example").score == INT32 - 10 + 1_000_000
