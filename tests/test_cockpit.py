"""What a marketer reads in the tick artifacts: who is where now, the funnel with its rates and bars, the reasons behind
each step's outcomes, the account overview; the markdown from given figures, then the figures of a scenario run on
both backends (ticks inline on a virtual clock) against what the database holds."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

from relance.cockpit import (account_markdown, account_title, bar, reasons_words, share, tick_title, who_is_where_markdown,
                             who_is_where_title)
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import open_store, sync_scenarios
from relance.settings import Settings, get_settings
from relance.standing import account_overview, iso_week_start, who_is_where
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 4, 9, 0, tzinfo=timezone.utc)  # a Wednesday: its ISO week began on Monday 2 March
DAY = timedelta(days=1)


# --------------------------------------------------------------------------- the markdown, from given figures


def _row(step: str, **figures: Any) -> dict[str, Any]:
    row = {"step": step, "reached": 0, "entered": 0, "now": 0, "waiting": 0, "due": 0, "first_due": None, "last_due": None,
           "sent": 0, "delivered": 0, "opened": 0, "clicked": 0, "left": 0, "outcomes": {}, "goals": {}, "reasons": {}}
    return row | figures


def _figures(*rows: dict[str, Any], goals: tuple[str, ...] = (), delivery_reported: bool = False) -> dict[str, Any]:
    return {"scenario": "nurture", "as_of": T0, "due_within": timedelta(hours=1), "steps": list(rows), "goals": list(goals),
            "delivery_reported": delivery_reported}


def test_a_bar_is_as_long_as_its_share_of_the_longest_and_never_hides_a_count() -> None:
    assert bar(40, 40) == "█" * 20
    assert bar(10, 40) == "█" * 5
    assert bar(1, 1000) == "█"  # one lead still shows
    assert bar(0, 40) == "" and bar(0, 0) == ""


def test_a_share_has_one_decimal_and_no_share_of_nothing() -> None:
    assert share(12, 30) == "12 (40.0 %)"
    assert share(1, 3) == "1 (33.3 %)"
    assert share(0, 0) == "0" and share(0, 30) == "0"


def test_reasons_read_most_common_first_with_their_counts() -> None:
    reasons = {"not-ready": {"grade C < B": 1, "score below 60": 4}, "exited": {"event demo_requested": 2}}

    assert reasons_words(reasons) == "not-ready: score below 60 (4), grade C < B (1); exited: event demo_requested (2)"


def test_who_is_where_shows_each_step_now_the_funnel_with_rates_and_bars_and_the_reasons() -> None:
    figures = _figures(
        _row("hello", reached=10, entered=10, sent=9, delivered=8, opened=4, clicked=1, outcomes={"entered": 10, "sent": 10}),
        _row("wait|2", reached=8, now=5, waiting=5, due=2, first_due=T0 + timedelta(minutes=30), last_due=T0 + 2 * DAY,
             left=1, goals={"event demo_requested": 1}, outcomes={"waiting": 8, "exited": 1},
             reasons={"exited": {"event demo_requested": 1}}),
        _row("to-sales", reached=4, now=0, left=0, outcomes={"not-ready": 3, "handed-off": 1},
             reasons={"not-ready": {"score below 60": 2, "score below 60 and grade D < B": 1}}),
        goals=("event demo_requested",), delivery_reported=True)

    lines = who_is_where_markdown(figures).splitlines()

    assert lines[0] == "# nurture: who is where, 2026-03-04 09:00 UTC"
    assert "| step | here now |  | waiting | due within 1 h | next due | last due |" in lines
    assert "| hello | 0 |  | 0 | 0 | - | - |" in lines
    assert ("| wait\\|2 | 5 | " + "█" * 20 + " | 5 | 2 | 2026-03-04 09:30 UTC | 2026-03-06 09:00 UTC |") in lines
    assert ("| step | entries |  | sent | delivered | opened | clicked | goal: event demo_requested | left |") in lines
    assert ("| hello | 10 | " + "█" * 20 + " | 9 (90.0 %) | 8 (80.0 %) | 4 (40.0 %) | 1 (10.0 %) | 0 | 0 |"
            in lines)
    assert ("| wait\\|2 | 8 | " + "█" * 16 + " | - | - | - | - | 1 (12.5 %) | 1 (12.5 %) |"
            in lines)
    assert ("| to-sales | not-ready 3, handed-off 1 | not-ready: score below 60 (2), score below 60 and grade D < B (1) |"
            in lines)
    assert who_is_where_title(figures) == ("nurture at 2026-03-04 09:00 UTC: 5 in the scenario now, 5 waiting, 2 due within "
                                           "1 h, 10 entered since the start")


def test_delivered_reads_unknown_when_the_mail_service_reports_no_delivery() -> None:
    lines = who_is_where_markdown(_figures(_row("hello", reached=2, sent=2, now=1, waiting=1, outcomes={"sent": 2}))).splitlines()

    assert "| hello | 2 | " + "█" * 20 + " | 2 (100.0 %) | - | 0 | 0 | 0 |" in lines


def test_an_empty_scenario_says_so_instead_of_an_empty_table() -> None:
    text_ = who_is_where_markdown(_figures())

    assert "No lead has entered this scenario yet" in text_ and "|" not in text_
    over = who_is_where_markdown(_figures(_row("hello", reached=3, left=3, outcomes={"entered": 3})))
    assert "No lead is in this scenario now" in over and "| hello | 3 |" in over


def test_the_account_overview_shows_stages_this_week_sales_and_deliverability() -> None:
    figures = {
        "as_of": T0, "leads_by_stage": {"lead": 6, "mql": 3, "sql": 1, "customer": 0},
        "week": {"start": iso_week_start(T0), "iso": "2026-W10", "mql": 2, "sql": 1},
        "sla": {"open": 2, "breaches": 1, "late_answers": 1, "unanswered_past_deadline": 0, "measured": 3},
        "deliverability": {"days": 14, "first_day": "2026-02-19", "last_day": "2026-03-04", "warnings": 0,
                           "total": {"sent": 200, "hard_bounces": 2, "soft_bounces": 0, "complaints": 1, "unsubscribes": 4,
                                     "hard_bounce_rate": 0.01, "soft_bounce_rate": 0.0, "complaint_rate": 0.005,
                                     "unsubscribe_rate": 0.02}},
    }

    lines = account_markdown(figures).splitlines()

    assert "| lead | 6 (60.0 %) | " + "█" * 20 + " |" in lines and "| customer | 0 |  |" in lines
    assert "## This week (2026-W10, from 2026-03-02 00:00 UTC)" in lines
    assert "- MQL reached: **2**" in lines and "- SQL reached: **1**" in lines
    assert "- waiting for an answer: **2**" in lines
    assert "| 200 | 2 (1.00 %) | 0 (0.00 %) | 1 (0.50 %) | 4 (2.00 %) |" in lines
    assert account_title(figures) == ("Account at 2026-03-04 09:00 UTC: 10 leads, 2 MQL and 1 SQL reached this week, "
                                      "2 hand-offs waiting, 1 SLA breaches")


def test_a_tick_title_names_the_scenario_and_the_time_of_the_tick() -> None:
    assert tick_title("whitepaper-nurture", T0, "whitepaper-nurture: 6 entered, 6 due, 1 batches, 6 sent, 5 waiting") == (
        "whitepaper-nurture, tick of 2026-03-04 09:00 UTC: 6 entered, 6 due, 1 batches, 6 sent, 5 waiting")


# --------------------------------------------------------------------------- a scenario run, on both backends

NURTURE = """\
scenario: nurture
trigger: {event: downloaded, where: {asset: guide}}
reentry: never
exit_when:
  - event: demo_requested
steps:
  - id: hello
    send: t-hello
    subject: "Votre guide"
  - id: pause
    wait: 2d
  - id: to-sales
    handoff: sales
  - id: rest
    wait: 10d
"""
ORDER = ("hello", "pause", "to-sales", "rest")
TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""
GRADE_B = {"job_title": "Directrice marketing", "company_revenue": 25_000_000}  # fit 60: grade B, as the handoff asks


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Settings:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    scoring = (ROOT / "scenarios" / "scoring.yaml").read_text(encoding="utf-8")
    (tmp_path / "scenarios" / "scoring.yaml").write_text(scoring.replace("later: {default_delay: 90d, scenario: re-engagement}\n", ""),
                                                         encoding="utf-8")
    shutil.copytree(ROOT / "templates" / "emails", tmp_path / "templates")
    (tmp_path / "templates" / "t-hello.mjml").write_text(TEMPLATE, encoding="utf-8")
    for name, value in {"RELANCE_DATABASE_URL": db_url, "RELANCE_SCENARIOS_DIR": str(tmp_path / "scenarios"),
                        "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"), "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"),
                        "RELANCE_TRANSPORT": "file"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return Settings()


def _arrive(engine, workspace, at: datetime, email: str, **profile: Any) -> None:
    """A lead fills the form (with its consent) and downloads the guide: the scenario enrolls it."""
    committed(engine, ingest_events, workspace=workspace, now=at, channel="test", events=[
        IncomingEvent("form_submitted", email, at, {"form": "livre-blanc", "consent_source": "livre-blanc",
                                                    "consent_wording": "J'accepte.", **profile}, f"form:{email}"),
        IncomingEvent("downloaded", email, at, {"asset": "guide"})])


def _event(engine, workspace, at: datetime, email: str, type_: str, **properties: Any) -> None:
    committed(engine, ingest_events, workspace=workspace, now=at, channel="test",
              events=[IncomingEvent(type_, email, at, properties)])


def run_week(engine, settings: Settings) -> None:
    """Day 0: five leads enter (two graded B); day 1: two more; day 2: one more, one of the first asks for a demo (the
    goal), the other first four reach the hand-off below its score of 60 (two also below grade B). A tick a day."""
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=T0 - DAY, workspace=workspace)

    def tick(at: datetime) -> None:
        run_tick_inline(engine, settings, scenario="nurture", now=at, workspace=workspace,
                        templates=TemplateLibrary(settings.templates_dir))

    for n in range(5):
        _arrive(engine, workspace, T0 - timedelta(hours=1), f"a{n}@acme.example", first_name=f"A{n}",
                **(GRADE_B if n in (1, 2) else {}))
    tick(T0)
    _event(engine, workspace, T0 + timedelta(hours=2), "a1@acme.example", "email_opened", scenario="nurture", step_id="hello")
    for n in range(2):
        _arrive(engine, workspace, T0 + DAY - timedelta(hours=1), f"b{n}@acme.example", first_name=f"B{n}")
    tick(T0 + DAY)
    _arrive(engine, workspace, T0 + 2 * DAY - timedelta(hours=1), "c0@acme.example", first_name="C0")
    _event(engine, workspace, T0 + 2 * DAY - timedelta(hours=1), "a0@acme.example", "demo_requested")
    tick(T0 + 2 * DAY)


def _scalar(engine, sql: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def test_who_is_where_is_what_the_database_holds_after_a_week_of_ticks(tmp_path, monkeypatch, db_url) -> None:
    settings = _settings(tmp_path, monkeypatch, db_url)
    engine = open_store(settings)
    run_week(engine, settings)
    now = T0 + 2 * DAY

    with Session(engine) as session:
        figures = who_is_where(session, "nurture", order=ORDER, now=now)
        before_b_is_due = who_is_where(session, "nurture", order=ORDER, now=T0 + 3 * DAY - timedelta(minutes=30))
    rows = {r["step"]: r for r in figures["steps"]}

    assert [r["step"] for r in figures["steps"]] == list(ORDER)
    # who is where now: b0, b1 and c0 wait at pause (due on days 3 and 4); a1..a4 wait at rest, a0 left on its goal
    assert [(r["now"], r["waiting"]) for r in figures["steps"]] == [(0, 0), (3, 3), (0, 0), (4, 4)]
    assert (rows["pause"]["first_due"], rows["pause"]["last_due"]) == (T0 + 3 * DAY, T0 + 4 * DAY)
    assert rows["rest"]["first_due"] == rows["rest"]["last_due"] == now + 10 * DAY
    assert [r["due"] for r in figures["steps"]] == [0, 0, 0, 0]  # nothing is due within the hour after the tick
    assert [r["due"] for r in before_b_is_due["steps"]] == [0, 2, 0, 0]  # half an hour before b0 and b1 are
    assert sum(r["now"] for r in figures["steps"]) == _scalar(engine, "SELECT COUNT(*) FROM enrollment WHERE status = 'active'")
    # the funnel since the start
    assert [r["reached"] for r in figures["steps"]] == [8, 8, 4, 4]
    assert (rows["hello"]["sent"], rows["hello"]["opened"]) == (8, 1)
    assert rows["hello"]["sent"] == _scalar(engine, "SELECT COUNT(*) FROM outbox WHERE step_id = 'hello' AND status = 'sent'")
    assert figures["goals"] == [goal := "event demo_requested"]  # the goal as the step log words it
    assert (rows["pause"]["goals"], rows["pause"]["left"]) == ({goal: 1}, 1)
    # the reasons: a0's goal at pause; the hand-off not ready on score alone (a1, a2: grade B) or on grade too
    assert rows["to-sales"]["outcomes"] == {"not-ready": 4}
    assert rows["to-sales"]["reasons"] == {"not-ready": {"score below 60": 2, "score below 60 and grade D < B": 2}}
    assert _scalar(engine, "SELECT COUNT(*) FROM step_log WHERE outcome = 'not-ready'") == 4

    markdown = who_is_where_markdown(figures)
    assert "| pause | 3 | " + "█" * 15 + " | 3 | 0 | 2026-03-07 09:00 UTC | 2026-03-08 09:00 UTC |" in markdown
    assert "| to-sales | 4 | " + "█" * 10 + " | - | - | - | - | 0 | 0 |" in markdown
    assert f"| hello | 8 | {'█' * 20} | 8 (100.0 %) | - | 1 (12.5 %) | 0 | 0 | 0 |" in markdown
    assert f"| pause | 8 | {'█' * 20} | - | - | - | - | 1 (12.5 %) | 1 (12.5 %) |" in markdown
    assert "not-ready: score below 60 (2), score below 60 and grade D < B (2)" in markdown
    engine.dispose()


def test_a_hand_off_step_that_does_not_hand_off_logs_the_lead_s_own_figures(tmp_path, monkeypatch, db_url) -> None:
    settings = _settings(tmp_path, monkeypatch, db_url)
    engine = open_store(settings)
    run_week(engine, settings)

    with engine.connect() as connection:
        rows = connection.execute(text("SELECT l.email, s.detail FROM step_log s JOIN lead l ON l.id = s.lead_id "
                                       "WHERE s.outcome = 'not-ready' ORDER BY l.email")).all()
    details = {email: (detail if isinstance(detail, dict) else json.loads(detail)) for email, detail in rows}
    assert details["a2@acme.example"] == {"why": "score 15 < 60", "reason": "score below 60"}
    assert details["a3@acme.example"] == {"why": "score 15 < 60 and grade D < B", "reason": "score below 60 and grade D < B"}
    engine.dispose()


def test_the_account_overview_counts_this_weeks_mql_and_the_deliverability_of_every_scenario(tmp_path, monkeypatch,
                                                                                                 db_url) -> None:
    settings = _settings(tmp_path, monkeypatch, db_url)
    engine = open_store(settings)
    run_week(engine, settings)
    workspace = load_workspace(settings)
    now = T0 + 2 * DAY
    # a1 (grade B) books a demo: 50 points bring it to the hand-off point, it goes to sales (an MQL, then with sales)
    _event(engine, workspace, now + timedelta(hours=1), "a1@acme.example", "demo_requested")

    with Session(engine) as session:
        figures = account_overview(session, now=now + timedelta(hours=2))
        next_week = account_overview(session, now=T0 + 7 * DAY)

    stages = figures["leads_by_stage"]
    assert list(stages)[:4] == ["lead", "mql", "sql-pending", "sql"]
    assert sum(stages.values()) == _scalar(engine, "SELECT COUNT(*) FROM lead") == 8
    assert stages["sql-pending"] == 1
    assert (figures["week"]["iso"], figures["week"]["start"]) == ("2026-W10", datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert (figures["week"]["mql"], figures["week"]["sql"]) == (1, 0)  # sql-pending counts as an MQL reached
    assert (next_week["week"]["iso"], next_week["week"]["mql"]) == ("2026-W11", 0)
    assert figures["sla"]["open"] == 1
    assert figures["deliverability"]["total"]["sent"] == 8
    assert "| sql-pending (with sales, not answered) | 1 (12.5 %) |" in account_markdown(figures)
    engine.dispose()


def test_the_hand_off_shortfall_names_every_rule_the_lead_misses() -> None:
    from relance.engine.types import EventFact
    from relance.scoring.config import ScoringConfig
    from relance.scoring.rules import handoff_shortfall

    config = ScoringConfig.model_validate({"handoff": {"score_at_least": 60, "grade_at_least": "B", "sales_ready": ["demo_requested"]}})
    demo = EventFact(type="demo_requested", occurred_at=T0, properties={})

    assert handoff_shortfall(config, score=29, grade="C", events=[demo]).why == "score 29 < 60 and grade C < B"
    assert handoff_shortfall(config, score=29, grade="A", events=[demo]).reason == "score below 60"
    assert handoff_shortfall(config, score=80, grade="B", events=[]).reason == "no sales-ready action"
    assert handoff_shortfall(config, score=80, grade="B", events=[demo], since=T0).why == (
        "no sales-ready action since the last rejection")  # the demo sales already turned down counts no more
    assert handoff_shortfall(config, score=80, grade="B", events=[demo]) is None
