"""Won and lost deals on both backends: stages, hand-offs, upsells, refusals, the CLI, the API, the migration."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.api.app import create_app
from relance.cli import app
from relance.deals import LOST_REASONS, BadValue, Closing, record_deal
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.sales import Answer, NoSuchLead, answer, open_handoff
from relance.scoring.config import ScoringConfig
from relance.settings import Settings, get_settings
from relance.store.repo import find_lead, upsert_lead
from relance.store.tables import Deal, Enrollment, Handoff, Lead, StageChange
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[1]
SCORING = ScoringConfig.model_validate({"sales": {"owners": ["claire@example.com"]}})
EMAIL = "lea@acme.example"


def _lead(session, clock, email=EMAIL, **profile) -> Lead:
    lead = upsert_lead(session, email=email, now=clock.now(), first_name="Léa", source="salon", **profile)
    session.flush()
    return lead


def _history(session, lead) -> list[tuple[str, str, str, str]]:
    rows = session.exec(select(StageChange).where(StageChange.lead_id == lead.id).order_by(StageChange.id)).scalars()
    return [(r.from_stage, r.to_stage, r.by, r.reason) for r in rows]


def _won(session, clock, email=EMAIL, **kw) -> Deal:
    return record_deal(session, email=email, closing=Closing("won", "claire@example.com", **kw), scoring=SCORING, now=clock.now())


def test_a_won_deal_after_an_accepted_handoff_makes_a_customer_and_says_who_and_how_much(session, clock):
    lead = _lead(session, clock)
    open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    answer(session, email=EMAIL, reply=Answer("accept", "claire@example.com"), scoring=SCORING, now=clock.now())
    deal = _won(session, clock, amount=12000, margin=4500, note="licence annuelle")
    session.commit()
    assert (lead.stage, deal.outcome, deal.kind, deal.amount, deal.margin, deal.closed_at) == (
        "customer", "won", "new", 12000, 4500, clock.now())
    assert _history(session, lead)[-1] == ("sql", "customer", "claire@example.com",
                                           "deal won: 12,000.00 (margin 4,500.00) (licence annuelle)")


def test_a_deal_won_on_an_open_handoff_answers_it_as_accepted_first(session, clock):
    lead = _lead(session, clock)
    handoff = open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    clock.advance(timedelta(hours=1))
    _won(session, clock, amount=900, margin=300, on=clock.now() - timedelta(days=2))
    session.commit()
    assert (handoff.status, handoff.answered_by, handoff.answered_at) == ("accepted", "claire@example.com", clock.now())
    assert [(f, t) for f, t, _by, _why in _history(session, lead)] == [("lead", "sql-pending"), ("sql-pending", "sql"), ("sql", "customer")]
    assert _history(session, lead)[-1][3] == f"deal won on {clock.now() - timedelta(days=2):%Y-%m-%d}: 900.00 (margin 300.00)"


def test_a_customer_winning_again_is_an_upsell_and_stays_a_customer(session, clock):
    lead = _lead(session, clock)
    _won(session, clock, amount=1000, margin=400)
    rows = len(_history(session, lead))
    upsell = _won(session, clock, amount=500, margin=200)
    session.commit()
    assert (upsell.kind, lead.stage, len(_history(session, lead))) == ("upsell", "customer", rows)
    assert session.exec(select(func.count()).select_from(Deal).where(Deal.lead_id == lead.id)).one()[0] == 2


def test_a_lead_never_handed_off_can_be_won(session, clock):
    lead = _lead(session, clock)  # stage lead: a deal signed straight from the website or a rep's own contact
    _won(session, clock, amount=100)
    assert [(f, t) for f, t, _by, _why in _history(session, lead)] == [("lead", "customer")]


def test_a_lost_deal_sends_the_lead_back_to_nurturing_with_its_reason(session, clock):
    lead = _lead(session, clock)
    open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    deal = record_deal(session, email=EMAIL, closing=Closing("lost", "karim@example.com", reason="competitor", note="parti chez X"),
                       scoring=SCORING, now=clock.now())
    session.commit()
    assert (deal.outcome, deal.reason, lead.stage) == ("lost", "competitor", "nurturing")
    assert session.exec(select(Handoff.status)).scalars().one() == "accepted"
    assert _history(session, lead)[-1] == ("sql", "nurturing", "karim@example.com", "deal lost: competitor (parti chez X)")


def test_a_lost_upsell_keeps_the_customer_and_a_lead_that_left_stays_out(session, clock):
    customer = _lead(session, clock)
    _won(session, clock, amount=100)
    record_deal(session, email=EMAIL, closing=Closing("lost", "k", reason="price"), scoring=SCORING, now=clock.now())
    gone = _lead(session, clock, "gone@acme.example")
    gone.stage = "disqualified"
    record_deal(session, email=gone.email, closing=Closing("lost", "k", reason="unreachable"), scoring=SCORING, now=clock.now())
    assert (customer.stage, gone.stage) == ("customer", "disqualified")


@pytest.mark.parametrize("closing, field, message", [
    (Closing("won", amount=-5), "amount", "amount must not be negative (got -5.00)"),
    (Closing("won", amount=1e13), "amount", "amount must be at most 1,000,000,000,000 (got 10,000,000,000,000.00)"),
    (Closing("won", amount=1e308, margin=1e308), "amount", "amount must be at most 1,000,000,000,000"),
    (Closing("won", amount=float("nan")), "amount", "amount must be a number (got nan)"),
    (Closing("won", amount=100, margin=-1), "margin", "margin must not be negative"),
    (Closing("won", amount=100, margin=150), "margin", "margin (150.00) is above the amount of the deal (100.00)"),
    (Closing("won", margin=10), "margin", "is above the amount of the deal (0.00)"),
    (Closing("lost", reason="meh"), "reason", "must be one of " + ", ".join(LOST_REASONS) + " (got 'meh')"),
    (Closing("lost"), "reason", "must be one of price, competitor"),
    (Closing("drawn"), "outcome", "must be won or lost"),
])
def test_impossible_deals_are_refused_naming_the_value_and_nothing_changes(session, clock, closing, field, message):
    lead = _lead(session, clock)
    open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    with pytest.raises(BadValue, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        record_deal(session, email=EMAIL, closing=closing, scoring=SCORING, now=clock.now())
    assert refused.value.field == field
    assert lead.stage == "sql-pending" and session.exec(select(Handoff.status)).scalars().one() == "open"
    assert session.exec(select(func.count()).select_from(Deal)).one()[0] == 0


def test_a_deal_in_the_future_or_of_an_unknown_lead_is_refused(session, clock):
    _lead(session, clock)
    with pytest.raises(BadValue, match=f"on {clock.now() + timedelta(days=1):%Y-%m-%d} is in the future") as refused:
        _won(session, clock, on=clock.now() + timedelta(days=1))
    assert refused.value.field == "on"
    with pytest.raises(NoSuchLead, match="no lead with email 'ghost@acme.example'"):
        _won(session, clock, email="ghost@acme.example")


WAITER = """\
scenario: waiter
trigger: {event: trial_started}
steps:
  - id: wait
    wait_until: {stage_in: [customer]}
    timeout: 30d
  - id: done
    end: true
"""


def test_a_won_deal_wakes_a_wait_on_the_customer_stage(engine, clock, tmp_path, db_url):
    for name in ("scenarios", "templates"):
        (tmp_path / name).mkdir()
    (tmp_path / "scenarios" / "waiter.yaml").write_text(WAITER, encoding="utf-8")
    settings = Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                        outbox_dir=tmp_path / "outbox", transport="null")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        _lead(session, clock)
        session.commit()
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("trial_started", EMAIL, clock.now(), {})], now=clock.now())
    run_tick_inline(engine, settings, scenario="waiter", now=clock.now(), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    won_at = clock.advance(timedelta(hours=1))
    with Session(engine) as session:
        record_deal(session, email=EMAIL, closing=Closing("won", amount=10), scoring=workspace.scoring, now=won_at)
        session.commit()
        assert session.exec(select(Enrollment.due_at)).scalars().one() == won_at


# The command line and the API


@pytest.fixture
def env(env: Path) -> Path:
    """The shipped project (tests/conftest.py) with its leads imported."""
    tmp_path = env
    (tmp_path / "l.csv").write_text("email,first_name,source\nlea@acme.example,Léa,salon\n", encoding="utf-8")
    assert CliRunner().invoke(app, ["import", str(tmp_path / "l.csv")]).exit_code == 0
    return tmp_path


def relance(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_sales_won_and_lost_from_the_command_line(env):
    won = relance("sales", "won", EMAIL, "--amount", "12000", "--margin", "4500", "--on", "2026-02-10", "--by", "claire",
                  "--now", "2026-03-01T09:00:00")
    assert won.exit_code == 0, won.output
    assert "lea@acme.example: deal won: 12,000.00 (margin 4,500.00) on 2026-02-10; stage customer" in won.output
    upsell = relance("sales", "won", EMAIL, "--amount", "3000", "--now", "2026-04-01")
    assert upsell.exit_code == 0 and "upsell won: 3,000.00" in upsell.output and "stage customer" in upsell.output
    lost = relance("sales", "lost", EMAIL, "--reason", "price", "--note", "trop cher", "--now", "2026-05-01")
    assert lost.exit_code == 0 and "deal lost: price on 2026-05-01; stage customer" in lost.output
    shown = json.loads(relance("lead", "show", EMAIL, "--json").output)
    assert shown["stage"] == "customer"
    assert [(c["to"], c["by"], c["reason"]) for c in shown["stage_history"]] == [
        ("customer", "claire", "deal won on 2026-02-10: 12,000.00 (margin 4,500.00)")]


@pytest.mark.parametrize("args, message", [
    (["won", EMAIL, "--amount", "-5"], "error: --amount must not be negative (got -5.00)"),
    (["won", EMAIL, "--amount", "1e308", "--margin", "1e308"], "error: --amount must be at most 1,000,000,000,000"),
    (["won", EMAIL, "--amount", "100", "--margin", "200"], "error: --margin (200.00) is above the amount of the deal (100.00)"),
    (["won", EMAIL, "--on", "2026-03-02", "--now", "2026-03-01"], "error: --on 2026-03-02 is in the future"),
    (["won", "ghost@acme.example"], "error: no lead with email 'ghost@acme.example'"),
    (["lost", EMAIL, "--reason", "meh"], "error: --reason of a lost deal must be one of price, competitor"),
])
def test_sales_won_and_lost_refuse_bad_values_naming_the_option(env, args, message):
    result = CliRunner().invoke(app, ["sales", *args])
    assert result.exit_code in (1, 2) and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    shown = json.loads(relance("lead", "show", EMAIL, "--json").output)
    assert shown["stage"] == "lead" and shown["stage_history"] == []


def test_amounts_stay_finite_so_the_report_stays_json(env):
    """Three deals of 1e308 each once made the revenue infinite, and `report --json` wrote `Infinity`, which no JSON
    reader takes."""
    for _ in range(3):
        assert relance("sales", "won", EMAIL, "--amount", "1e308", "--margin", "1e308").exit_code in (1, 2)
    assert relance("cost", "add", "salon", "1e308").exit_code in (1, 2)
    report = relance("report", "--json")

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in relance report --json")

    assert report.exit_code == 0 and json.loads(report.output, parse_constant=refuse)


def test_the_option_of_a_bad_date_is_named(env):
    for option in ("--on", "--now"):
        result = CliRunner().invoke(app, ["sales", "won", EMAIL, option, "soon"])
        assert result.exit_code == 2 and f"Invalid value for {option}: 'soon' is not an ISO date/time" in result.output


@pytest.fixture
def api(engine, clock, tmp_path, db_url):
    settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", api_token="t0ken", transport="null")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        _lead(session, clock)
        session.commit()
    return TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock))


AUTH = {"Authorization": "Bearer t0ken"}


def test_deals_through_the_api(api, engine, clock):
    won = api.post(f"/sales/{EMAIL}/won", json={"by": "crm", "amount": 5000, "margin": 2000, "on": "2026-01-02"}, headers=AUTH)
    assert won.status_code == 200, won.text
    assert won.json() == {"email": EMAIL, "outcome": "won", "kind": "new", "amount": 5000, "margin": 2000, "reason": None,
                          "on": "2026-01-02T00:00:00+00:00", "stage": "customer"}
    lost = api.post(f"/sales/{EMAIL.upper()}/lost", json={"by": "crm", "reason": "no-decision"}, headers=AUTH)
    assert lost.status_code == 200 and (lost.json()["kind"], lost.json()["stage"]) == ("upsell", "customer")
    with Session(engine) as session:
        assert [(d.outcome, d.by) for d in session.exec(select(Deal).order_by(Deal.id)).scalars()] == [("won", "crm"), ("lost", "crm")]


@pytest.mark.parametrize("verdict, body, field, message", [
    ("won", {"by": "crm", "amount": -1}, "amount", "amount must not be negative"),
    ("won", {"by": "crm", "amount": 1e308}, "amount", "amount must be at most 1,000,000,000,000"),
    ("won", {"by": "crm", "amount": 10, "margin": 20}, "margin", "margin (20.00) is above the amount"),
    ("won", {"by": "crm", "on": "2030-01-01"}, "on", "on 2030-01-01 is in the future"),
    ("lost", {"by": "crm", "reason": "meh"}, "reason", "reason of a lost deal must be one of price"),
])
def test_the_api_refuses_bad_deals_naming_the_field(api, engine, verdict, body, field, message):
    refused = api.post(f"/sales/{EMAIL}/{verdict}", json=body, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field]
    assert message in refused.json()["detail"][0]["msg"]
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Deal)).one()[0] == 0
        assert find_lead(session, EMAIL).stage == "lead"


def test_the_api_wants_the_token_and_a_known_lead_and_who_closed_it_defaults_to_sales_as_on_the_command_line(api, engine):
    assert api.post(f"/sales/{EMAIL}/won", json={"by": "crm"}).status_code == 401
    assert api.post("/sales/ghost@x.example/won", json={"by": "crm"}, headers=AUTH).status_code == 404
    missing = api.post(f"/sales/{EMAIL}/lost", json={"by": "crm"}, headers=AUTH)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "reason"]
    assert api.post("/sales/ghost@x.example/won", json={"amount": 5}, headers=AUTH).status_code == 404
    assert api.post(f"/sales/{EMAIL}/won", json={}, headers=AUTH).status_code == 200
    with Session(engine) as session:
        assert session.exec(select(Deal.by)).scalars().all() == ["sales"]


def test_the_migration_gives_customers_from_before_deals_a_won_deal(db_url, clock):
    from alembic import command
    from sqlalchemy import text

    from relance.store.db import alembic_config, make_engine

    engine = make_engine(db_url)
    config = alembic_config(engine)
    command.upgrade(config, "0004")
    became = clock.now() - timedelta(days=40)
    stamp = (lambda t: t.replace(tzinfo=None)) if db_url.startswith("sqlite") else (lambda t: t)  # as each backend stores it
    with engine.begin() as connection:
        for email, stage in (("old@x.example", "customer"), ("was@x.example", "nurturing"), ("no@x.example", "sql")):
            connection.execute(text("INSERT INTO lead (email, first_name, last_name, job_title, company, sector, country, timezone, "
                                    "language, source, stage, score, fit, grade, fields, tags, created_at, updated_at) VALUES "
                                    "(:e, '', '', '', '', '', '', 'UTC', 'fr', 's', :s, 0, 0, 'D', '{}', '[]', :t, :t)"),
                               {"e": email, "s": stage, "t": stamp(clock.now())})
        connection.execute(text("INSERT INTO stage_change (lead_id, from_stage, to_stage, \"by\", reason, at) SELECT id, 'sql', "
                                "'customer', 'crm', '', :t FROM lead WHERE email IN ('old@x.example', 'was@x.example')"),
                           {"t": stamp(became)})
    command.upgrade(config, "head")
    with Session(engine) as session:
        deals = session.exec(select(Lead.email, Deal.outcome, Deal.amount, Deal.closed_at).join(Deal, Deal.lead_id == Lead.id)
                             .order_by(Lead.email)).all()
    engine.dispose()
    assert [tuple(d) for d in deals] == [("old@x.example", "won", 0.0, became), ("was@x.example", "won", 0.0, became)]
