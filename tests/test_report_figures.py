"""Every figure of `relance report` against a second, independent reading of the raw rows (plain SQL text).

The data set is made through the real code paths, on both backends: leads that come through forms, ticks of a
nurture scenario (`run_tick_inline`), opens, clicks and an unsubscribe, sales answering hand-offs on a virtual
clock, the SLA flow run once. It holds what the report must count right: a skipped send (the lead unsubscribed),
failed sends (a webhook with a broken address), failed enrollments (a step whose points no database stores),
waits in progress beside waits that are over, early, late and missing answers, open hand-offs past their deadline
(flagged by the SLA flow or not), a withdrawn one, several rejection reasons. `recompute` is used by the demo's
test too. Economics (costs, margins) are checked where they are computed, not here.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlmodel import Session
from typer.testing import CliRunner

from relance.cli import app
from relance.email.templates import TemplateLibrary
from relance.housekeeping import run_sla
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import open_store, sync_scenarios
from relance.report import build_report
from relance.sales import Answer, answer
from relance.scoring.ledger import move_stage
from relance.settings import Settings, get_settings
from relance.store.repo import find_lead
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import professional

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday
AS_OF = T0 + timedelta(days=4)
H = timedelta(hours=1)

NURTURE = """\
scenario: nurture
trigger: {event: downloaded, where: {asset: guide}}
reentry: never
steps:
  - id: hello
    send: t-hello
    subject: "Votre guide"
  - id: pause
    wait: 2d
  - id: opened?
    if: {opened: hello}
    then: vip
    else: nudge
  - id: vip
    send: t-vip
    subject: "Pour vous"
    next: hook
  - id: nudge
    score: +1000  # overflows the score of the leads brought to the brink: they fail here
  - id: hook
    notify: {webhook: "http://localhost:9/hook"}  # refused when sent: localhost is this machine
  - id: rest
    wait: 10d
"""
ORDER = ("hello", "pause", "opened?", "vip", "nudge", "hook", "rest")
TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""


# --------------------------------------------------------------------------- the second reading


def _rows(connection: Connection, sql: str, **params: Any) -> list[Any]:
    return connection.execute(text(sql), params).all()


def _at(connection: Connection, when: datetime) -> Any:
    """An instant as the backend stores it (SQLite: naive UTC text), to compare columns with in SQL."""
    when = when.astimezone(timezone.utc)
    return when.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if connection.dialect.name == "sqlite" else when


def _dt(value: Any) -> datetime:
    value = datetime.fromisoformat(value) if isinstance(value, str) else value
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _funnel(c: Connection) -> dict[str, Any]:
    reach = {"mql": "('mql', 'sql-pending', 'sql', 'customer')", "sql": "('sql', 'customer')", "customer": "('customer')"}
    counts = {"lead": _rows(c, "SELECT COUNT(*) FROM lead")[0][0]}
    for stage, stages in reach.items():
        counts[stage] = _rows(c, f"SELECT COUNT(*) FROM lead WHERE stage IN {stages} OR id IN "
                                 f"(SELECT lead_id FROM stage_change WHERE to_stage IN {stages})")[0][0]

    def hours(stages: str) -> float | None:
        firsts = _rows(c, f"SELECT l.created_at, MIN(s.at) FROM lead l JOIN stage_change s ON s.lead_id = l.id "
                          f"WHERE s.to_stage IN {stages} GROUP BY l.id, l.created_at")
        return round(median((_dt(at) - _dt(created)).total_seconds() / 3600 for created, at in firsts), 2) if firsts else None

    return {"counts": counts,
            "rates": {"lead_to_mql": _rate(counts["mql"], counts["lead"]), "mql_to_sql": _rate(counts["sql"], counts["mql"]),
                      "sql_to_customer": _rate(counts["customer"], counts["sql"]),
                      "lead_to_customer": _rate(counts["customer"], counts["lead"])},
            "median_hours_to_mql": hours(reach["mql"]), "median_hours_to_sql": hours(reach["sql"])}


def _steps(c: Connection) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}

    def row(scenario: str, step: str) -> dict[str, Any]:
        return table.setdefault(scenario, {}).setdefault(step, {
            "step": step, "reached": 0, "entered": 0, "now": 0, "waiting": 0, "sent": 0, "delivered": 0, "opened": 0,
            "clicked": 0, "left": 0, "outcomes": {}})

    for scenario, step, reached, entered in _rows(c, "SELECT scenario, step_id, COUNT(DISTINCT enrollment_id), "
                                                     "SUM(CASE WHEN kind = 'enter' THEN 1 ELSE 0 END) FROM step_log "
                                                     "GROUP BY scenario, step_id"):
        row(scenario, step).update(reached=reached, entered=entered)
    for scenario, step, outcome, n in _rows(c, "SELECT scenario, step_id, outcome, COUNT(*) FROM step_log "
                                               "GROUP BY scenario, step_id, outcome"):
        row(scenario, step)["outcomes"][outcome] = n
    for scenario, step, status, waits in _rows(c, "SELECT scenario, step_id, status, waiting IS NOT NULL FROM enrollment "
                                                  "WHERE step_id IS NOT NULL"):
        r = row(scenario, step)
        if status == "active":
            r["now"] += 1
            r["waiting"] += bool(waits)  # in a wait now: who waited once and went on is not
        else:
            r["left"] += 1
    for scenario, step, n in _rows(c, "SELECT scenario, step_id, COUNT(*) FROM outbox WHERE status = 'sent' AND "
                                      "enrollment_id IS NOT NULL GROUP BY scenario, step_id"):
        row(scenario, step)["sent"] = n
    engaged: dict[tuple[str, str, str], set[int]] = {}
    for lead_id, kind, properties in _rows(c, "SELECT lead_id, type, properties FROM event "
                                              "WHERE type IN ('email_delivered', 'email_opened', 'email_clicked')"):
        p = json.loads(properties) if isinstance(properties, str) else properties
        engaged.setdefault((p.get("scenario"), p.get("step_id"), kind), set()).add(lead_id)
    for scenario, steps in table.items():
        for step, r in steps.items():
            r["delivered"] = len(engaged.get((scenario, step, "email_delivered"), ()))
            r["opened"] = len(engaged.get((scenario, step, "email_opened"), ()))
            r["clicked"] = len(engaged.get((scenario, step, "email_clicked"), ()))
    return table


def _sla(c: Connection, now: datetime) -> dict[str, Any]:
    answered = "status IN ('accepted', 'rejected', 'later')"
    (handoffs, open_, n_answered, met_target, met_deadline, overdue), = _rows(c, f"""
        SELECT COUNT(*),
               SUM(CASE WHEN status = 'open' THEN 1 ELSE 0 END),
               SUM(CASE WHEN {answered} THEN 1 ELSE 0 END),
               SUM(CASE WHEN {answered} AND answered_at <= target_at THEN 1 ELSE 0 END),
               SUM(CASE WHEN {answered} AND answered_at <= deadline_at THEN 1 ELSE 0 END),
               SUM(CASE WHEN (status = 'open' AND (deadline_at <= :now OR deadline_missed_at IS NOT NULL))
                          OR (status = 'withdrawn' AND answered_at > deadline_at) THEN 1 ELSE 0 END)
        FROM handoff""", now=_at(c, now))
    open_, n_answered, met_target, met_deadline, overdue = (int(x or 0) for x in (open_, n_answered, met_target, met_deadline, overdue))
    measured = n_answered + overdue
    return {"handoffs": handoffs, "open": open_, "measured": measured, "met_target": met_target, "met_deadline": met_deadline,
            "within_target": _rate(met_target, measured), "within_deadline": _rate(met_deadline, measured),
            "breaches": (n_answered - met_deadline) + overdue, "late_answers": n_answered - met_deadline,
            "unanswered_past_deadline": overdue,
            "answers": dict(_rows(c, "SELECT status, COUNT(*) FROM handoff WHERE status <> 'open' GROUP BY status")),
            "rejection_reasons": dict(_rows(c, "SELECT reason, COUNT(*) FROM handoff WHERE status = 'rejected' GROUP BY reason"))}


def _delivery(c: Connection, now: datetime) -> dict[str, Any]:
    return {
        "by_status": dict(_rows(c, "SELECT status, COUNT(*) FROM outbox GROUP BY status")),
        "unknown": [r[0] for r in _rows(c, "SELECT id FROM outbox WHERE status = 'unknown' OR (status = 'sending' AND "
                                           "COALESCE(attempted_at, created_at) < :cut) ORDER BY id", cut=_at(c, now - H))],
        "failed_enrollments": [{"scenario": s, "step_id": step, "count": n, "reason": reason} for s, step, n, reason in _rows(
            c, "SELECT scenario, step_id, COUNT(*), MIN(exit_reason) FROM enrollment WHERE status = 'failed' "
               "GROUP BY scenario, step_id ORDER BY scenario, step_id")],
    }


def recompute(connection: Connection, now: datetime) -> dict[str, Any]:
    """The report's figures (but economics) as of `now`, read again from the raw rows by plain SQL."""
    return {"leads_by_stage": dict(_rows(connection, "SELECT stage, COUNT(*) FROM lead GROUP BY stage")),
            "funnel": _funnel(connection), "scenarios": _steps(connection), "sla": _sla(connection, now),
            "delivery": _delivery(connection, now)}


def assert_report_matches(report: dict[str, Any], connection: Connection, now: datetime,
                          orders: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Every figure of `report` (from build_report, or `relance report --json`) equals the second reading; returns it."""
    again = recompute(connection, now)
    assert report["leads_by_stage"] == again["leads_by_stage"]
    assert report["funnel"] == again["funnel"]
    assert report["sla"] == again["sla"]
    delivery = report["delivery"]
    assert delivery["by_status"] == again["delivery"]["by_status"]
    assert delivery["failed_enrollments"] == again["delivery"]["failed_enrollments"]
    assert [r["outbox_id"] for r in delivery["unknown"]] == again["delivery"]["unknown"]
    assert set(report["scenarios"]) == set(again["scenarios"])
    for scenario, rows in report["scenarios"].items():
        assert {r["step"]: r for r in rows} == again["scenarios"][scenario], scenario
        order = orders.get(scenario, ())
        place = {step: (order.index(step) if step in order else len(order), step) for step in again["scenarios"][scenario]}
        assert [r["step"] for r in rows] == sorted(place, key=place.get), scenario  # in the scenario's order
    return again


# --------------------------------------------------------------------------- the data set, through the real code


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Settings:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    scoring = (ROOT / "scenarios" / "scoring.yaml").read_text(encoding="utf-8")
    (tmp_path / "scenarios" / "scoring.yaml").write_text(scoring.replace("later: {default_delay: 90d, scenario: re-engagement}\n", ""), encoding="utf-8")
    shutil.copytree(ROOT / "templates" / "emails", tmp_path / "templates")  # the layout and the hand-off email
    for name in ("t-hello", "t-vip"):
        (tmp_path / "templates" / f"{name}.mjml").write_text(TEMPLATE, encoding="utf-8")
    for name, value in {"RELANCE_DATABASE_URL": db_url, "RELANCE_SCENARIOS_DIR": str(tmp_path / "scenarios"),
                        "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"), "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"),
                        "RELANCE_TRANSPORT": "file", "COLUMNS": "250"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return Settings()


def _form(email: str, at: datetime, **profile: Any) -> IncomingEvent:
    return IncomingEvent("form_submitted", email, at, {"form": "livre-blanc", "consent_source": "livre-blanc",
                                                        "consent_wording": "J'accepte.", **profile}, f"form:{email}")


def _ingest(engine, workspace, at: datetime, *events: IncomingEvent) -> None:
    committed(engine, ingest_events, workspace=workspace, events=list(events), now=at, channel="test")


# hand-offs: (opened after T0, the answer: (verdict, reason, hours after opening) or None for none)
HANDOFFS = {
    "h0": (0, ("accept", None, 1)),              # within target
    "h1": (0, ("reject", "no-budget", 10)),      # within deadline, past target
    "h2": (0, ("reject", "no-need", 60)),        # late, after the SLA flow flagged it
    "h3": (24, ("reject", "bad-timing", 55)),    # late, the SLA flow never saw it open past its deadline
    "h4": (0, None),                             # open past its deadline, flagged
    "h5": (24, None),                            # open past its deadline, not flagged: still a breach
    "h6": (84, None),                            # open, deadline still ahead: not measured yet
    "h7": (0, ("later", "budget au prochain trimestre", 3)),
    "h8": (0, ("unsubscribed", None, 5)),        # withdrawn before its deadline: not measured
    "h9": (0, ("accept", None, 40)),
}


def build_data_set(engine, settings: Settings) -> None:
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=T0 - timedelta(days=5), workspace=workspace)
    moments: list[tuple[datetime, Any]] = []
    for day, leads in ((0, range(6)), (1, (6, 7)), (3, (8, 9))):  # the nurture: forms, then the guide downloaded
        at = T0 + timedelta(days=day) - H
        moments.append((at, [e for n in leads for e in (_form(f"n{n}@acme.example", at, first_name=f"N{n}"),
                                                          IncomingEvent("downloaded", f"n{n}@acme.example", at, {"asset": "guide"}))]))
    hello = {"scenario": "nurture", "step_id": "hello"}
    moments.append((T0 + 2 * H, [IncomingEvent("email_opened", f"n{n}@acme.example", T0 + 2 * H, hello) for n in (0, 1, 2)]
                    + [IncomingEvent("email_clicked", "n0@acme.example", T0 + 2 * H, hello)]))
    moments.append((T0 + 3 * H, [IncomingEvent("unsubscribed", "n2@acme.example", T0 + 3 * H)]))  # its vip email: skipped
    for k, (name, (opened, reply)) in enumerate(HANDOFFS.items()):  # graded B; the demo request hands them to sales
        email, at = f"{name}@globex.example", T0 + opened * H
        moments.append((at - (6 * k + 6) * H, [_form(email, at - (6 * k + 6) * H, job_title="Directrice marketing",
                                                     company_revenue=25_000_000)]))
        moments.append((at, [IncomingEvent("demo_requested", email, at)]))
        if reply is not None:
            moments.append((at + reply[2] * H, (email, reply)))
    moments += [(T0 + 50 * H, "sla"), (T0 + 30 * H, ("h0@globex.example", ("won", None, 0))), (T0 + 25 * H, "brink")]
    moments += [(T0 + timedelta(days=day), "tick") for day in range(4)]
    for at, what in sorted(moments, key=lambda m: (m[0], m[1] == "tick")):
        if what == "tick":
            run_tick_inline(engine, settings, scenario="nurture", now=at, workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
        elif what == "sla":
            committed(engine, run_sla, workspace=workspace, now=at)
        elif what == "brink":
            _to_the_brink(engine, [f"n{n}@acme.example" for n in range(3, 8)])
        elif isinstance(what, list):
            _ingest(engine, workspace, at, *what)
        else:
            _answer(engine, workspace, at, *what)


def _to_the_brink(engine, emails: list[str]) -> None:
    """Scores a step's points cannot be added to (the column's largest integer, less 10): those leads fail at nudge."""
    from sqlalchemy import update

    from relance.store.tables import Lead

    largest = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER (64 bits) on SQLite
    with Session(engine) as session:
        session.execute(update(Lead).where(Lead.email.in_(emails)).values(score=largest - 10))
        session.commit()


def _answer(engine, workspace, at: datetime, email: str, reply: tuple) -> None:
    verdict, reason, _ = reply
    if verdict == "unsubscribed":
        return _ingest(engine, workspace, at, IncomingEvent("unsubscribed", email, at))
    with Session(engine) as session:
        if verdict == "won":
            move_stage(session, find_lead(session, email), "customer", now=at, by="crm", reason="contrat signé")
        else:
            until = at + timedelta(days=30) if verdict == "later" else None
            answer(session, email=email, reply=Answer(verdict, "claire@example.com", reason=reason, until=until),
                   scoring=workspace.scoring, now=at)
        session.commit()


def test_every_figure_of_the_report_is_what_the_rows_say(tmp_path, monkeypatch, db_url) -> None:
    settings = _settings(tmp_path, monkeypatch, db_url)
    engine = open_store(settings)
    build_data_set(engine, settings)
    with Session(engine) as session:
        report = build_report(session, now=AS_OF, orders={"nurture": ORDER})
    with engine.connect() as connection:
        again = assert_report_matches(report, connection, AS_OF, {"nurture": ORDER})
    shown = CliRunner().invoke(app, ["report", "--json", "--now", AS_OF.isoformat()])
    assert shown.exit_code == 0, shown.output
    with engine.connect() as connection:
        assert_report_matches(json.loads(shown.stdout), connection, AS_OF, {"nurture": ORDER})

    # the data set holds every case worth counting (else the comparison proves little)
    steps = again["scenarios"]["nurture"]
    assert (steps["vip"]["sent"], steps["vip"]["outcomes"]["sent"]) == (2, 3)  # 3 written, 1 skipped: 2 sent
    # skipped: the vip email, and two hand-off notices sales answered before they left; failed: the webhooks
    assert again["delivery"]["by_status"]["skipped"] == 3 and again["delivery"]["by_status"]["failed"] == 3
    assert again["delivery"]["failed_enrollments"][0]["count"] == 5  # n3, n4, n5, n6, n7 (at nudge, claimed at pause)
    assert (steps["pause"]["outcomes"]["waiting"], steps["pause"]["waiting"], steps["rest"]["waiting"]) == (10, 2, 3)
    sla = again["sla"]
    assert (sla["measured"], sla["met_target"], sla["met_deadline"]) == (8, 1, 4)  # h0..h5, h7, h9; h0; h0, h1, h7, h9
    assert (sla["late_answers"], sla["unanswered_past_deadline"], sla["breaches"]) == (2, 2, 4)  # h2, h3; h4, h5
    assert sla["rejection_reasons"] == {"no-budget": 1, "no-need": 1, "bad-timing": 1}
    assert again["funnel"]["counts"]["customer"] == 1 and again["funnel"]["median_hours_to_mql"] > 0
    engine.dispose()


def test_the_printed_report_is_self_consistent(tmp_path, monkeypatch, db_url) -> None:
    """Breaches beside within deadline: both out of the measured hand-offs; who waits now beside the step log."""
    settings = _settings(tmp_path, monkeypatch, db_url)
    engine = open_store(settings)
    build_data_set(engine, settings)
    engine.dispose()
    shown = CliRunner().invoke(app, ["report", "--now", AS_OF.isoformat()])
    assert shown.exit_code == 0, shown.output
    text_ = " ".join(shown.stdout.split())
    for line in ("hand-offs 10 (3 open)", "measured 8 (answered, or unanswered past the deadline)", "within target 1 (12.5 %)",
                 "within deadline 4 (50.0 %)", "breaches 4 (2 answered late, 2 unanswered) = measured - within deadline"):
        assert line in text_
    assert "…" not in shown.stdout  # nothing cut in 80 columns
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line.split()[:1] in (["pause"], ["vip"])}
    # reached, entered, here, waiting, sent, opened, clicked, left
    assert rows["pause"] == ["10", "0", "2", "2", "0", "0", "0", "5"]
    assert rows["vip"][4] == "2"  # sent: 2 of the 3 written (1 skipped)
    assert "pause: began waiting 10, failed 5, waited 3" in shown.stdout and "vip: written 3" in shown.stdout
    # the five that failed at nudge were claimed at the wait before it: that is where the enrollment says they left
    assert "5 lead(s) left nurture at step pause on an error, e.g. error at step pause" in " ".join(shown.stderr.split())
    assert "message(s) failed: `relance outbox list --status failed` shows why" in " ".join(shown.stderr.split())


def test_a_late_answer_is_a_breach_whether_or_not_the_sla_flow_ran(engine, clock) -> None:
    """The smallest case of the demo's "within deadline 81.8 %" beside "breaches 0"."""
    from relance.sales import open_handoff
    from relance.scoring.config import ScoringConfig
    from relance.store.repo import upsert_lead

    scoring = ScoringConfig()
    with Session(engine) as session:
        lead = upsert_lead(session, email="late@globex.example", now=clock.now(), fields=professional())
        session.flush()
        open_handoff(session, lead, scoring=scoring, now=clock.now(), source="test")
        answer(session, email=lead.email, reply=Answer("accept", "claire@example.com"), scoring=scoring,
               now=clock.now() + timedelta(hours=60))  # the deadline was at 48 h; no SLA flow ran
        session.commit()
        sla = build_report(session, now=clock.now() + timedelta(days=5))["sla"]
    assert (sla["measured"], sla["within_deadline"], sla["breaches"], sla["late_answers"]) == (1, 0.0, 1, 1)


# --------------------------------------------------------------------------- --scenario and --now


def test_an_unknown_scenario_is_refused_and_one_no_longer_in_the_folder_is_reported(tmp_path, monkeypatch, db_url) -> None:
    settings = _settings(tmp_path, monkeypatch, db_url)
    engine = open_store(settings)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=T0, workspace=workspace)
    _ingest(engine, workspace, T0, _form("n0@acme.example", T0), IncomingEvent("downloaded", "n0@acme.example", T0, {"asset": "guide"}))
    run_tick_inline(engine, settings, scenario="nurture", now=T0, workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    engine.dispose()

    refused = CliRunner().invoke(app, ["report", "--scenario", "nope"])
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.strip() == "error: --scenario 'nope': no such scenario (known: nurture)"

    (tmp_path / "scenarios" / "nurture.yaml").rename(tmp_path / "nurture.yaml")  # retired: its rows stay
    (tmp_path / "scenarios" / "other.yaml").write_text(NURTURE.replace("scenario: nurture", "scenario: other"), encoding="utf-8")
    get_settings.cache_clear()
    kept = CliRunner().invoke(app, ["report", "--json", "--scenario", "nurture"])
    assert kept.exit_code == 0, kept.output
    assert [r["step"] for r in json.loads(kept.stdout)["scenarios"]["nurture"]] == ["hello", "pause"]
    refused = CliRunner().invoke(app, ["report", "--scenario", "nope"])
    assert refused.stderr.strip() == "error: --scenario 'nope': no such scenario (known: nurture, other)"


def test_report_takes_now_and_refuses_a_bad_one(tmp_path, monkeypatch, db_url) -> None:
    settings = _settings(tmp_path, monkeypatch, db_url)
    open_store(settings).dispose()
    bad = CliRunner().invoke(app, ["report", "--now", "tomorrow"])
    assert bad.exit_code == 2 and "--now" in bad.output and "'tomorrow' is not an ISO date/time" in bad.output
    good = CliRunner().invoke(app, ["report", "--json", "--now", "2026-03-06T09:00:00+01:00"])
    assert good.exit_code == 0 and json.loads(good.stdout)["as_of"] == "2026-03-06T08:00:00+00:00"
