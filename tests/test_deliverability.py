"""Deliverability in the report: bounces, complaints and unsubscribes per scenario and sending day, and the warnings
they call for, on both backends. The emails that left are outbox rows written here; what comes back comes in through
the real doors: the SES event handler (bounces, complaints) and ingestion as the one-click link records it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st
from sqlmodel import Session
from typer.testing import CliRunner

from relance.ingest import IncomingEvent, ingest_events
from relance.report import (COMPLAINT_LIMIT, COMPLAINT_WATCH, HARD_BOUNCE_LIMIT, HARD_BOUNCE_WATCH, MIN_SENT, OUTCOMES,
                            build_report, deliverability, tally, warnings_of)
from relance.scoring.config import ScoringConfig
from relance.ses_events import DrainReport, handle
from relance.store.tables import Lead, Outbox
from relance.workspace import Workspace

LIBRARY = Workspace(scoring=ScoringConfig.model_validate({"behaviour": {"email_opened": 1}}))
NOW = datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)
DAY1, DAY2 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc), datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


class Mail:
    """Emails to leads that left, one lead each, and what comes back for them through the real doors."""

    def __init__(self, session: Session) -> None:
        self.session, self.n = session, 0

    def sent(self, scenario: str, at: datetime, count: int, *, kind: str = "lead", status: str = "sent") -> list[Outbox]:
        leads = [Lead(email=f"p{self.n + i}@acme.example", created_at=at, updated_at=at) for i in range(count)]
        self.session.add_all(leads)
        self.session.flush()
        rows = [Outbox(lead_id=lead.id, scenario=scenario, step_id="send-guide", template="t", to_address=lead.email,
                       kind=kind, status=status, message_id=f"ses-{self.n + i}", created_at=at, attempted_at=at,
                       sent_at=at if status == "sent" else None, options={}) for i, lead in enumerate(leads)]
        self.n += count
        self.session.add_all(rows)
        self.session.commit()
        return rows

    def ses(self, kind: str, row: Outbox, at: datetime, **detail) -> None:
        """An SES event about `row`'s message, as the SQS drain hands it to `handle`."""
        recipients = {"Bounce": "bouncedRecipients", "Complaint": "complainedRecipients"}
        body = {"eventType": kind, "mail": {"messageId": row.message_id, "timestamp": at.isoformat(),
                                             "destination": [row.to_address]},
                kind.lower(): {"timestamp": at.isoformat(), recipients[kind]: [{"emailAddress": row.to_address}], **detail}}
        handle(self.session, workspace=LIBRARY, body=json.dumps({"Type": "Notification", "Message": json.dumps(body)}),
               now=NOW, report=DrainReport())
        self.session.commit()

    def bounce(self, row: Outbox, *, hard: bool = True, after: timedelta = timedelta(minutes=5)) -> None:
        self.ses("Bounce", row, row.sent_at + after, bounceType="Permanent" if hard else "Transient")

    def complaint(self, row: Outbox, *, after: timedelta = timedelta(hours=2)) -> None:
        self.ses("Complaint", row, row.sent_at + after)

    def unsubscribe(self, row: Outbox, *, after: timedelta = timedelta(hours=3)) -> None:
        """The one-click link's event, with the properties relance.api.app's `record` gives it."""
        properties = {"scenario": row.scenario, "step_id": row.step_id, "enrollment_id": None, "outbox_id": row.id}
        ingest_events(self.session, workspace=LIBRARY, channel="link", now=NOW, events=[
            IncomingEvent("unsubscribed", row.to_address, row.sent_at + after, properties, f"unsubscribe:{row.lead_id}")])
        self.session.commit()


@pytest.fixture
def mail(session) -> Mail:
    return Mail(session)


def _day(figures: dict, scenario: str, day: str) -> dict:
    return next(d for d in figures["scenarios"][scenario]["by_day"] if d["day"] == day)


def test_rates_per_scenario_and_sending_day_count_each_email_once_against_the_day_it_left(session, mail):
    a1, a2, b1 = mail.sent("nurture", DAY1, 600), mail.sent("nurture", DAY2, 500), mail.sent("webinar", DAY1, 40)
    for row in a1[:3]:
        mail.bounce(row)                                   # 3 hard bounces on day 1
    mail.bounce(a1[3], hard=False)                         # a soft one
    mail.bounce(a1[4], hard=False)                         # soft, then hard, of the same email: a hard bounce
    mail.bounce(a1[4], hard=True, after=timedelta(hours=4))
    mail.complaint(a1[10])
    mail.complaint(a1[10], after=timedelta(hours=30))      # the same email complained of twice: one complaint
    mail.unsubscribe(a1[20])
    mail.unsubscribe(a1[21], after=timedelta(days=1))      # a day later: still day 1's email
    for row in a2[:2]:
        mail.complaint(row)
    mail.complaint(b1[0])

    d = deliverability(session, now=NOW, days=14)

    day1 = _day(d, "nurture", "2026-11-30")
    assert {k: day1[k] for k in ("sent", *OUTCOMES)} == {"sent": 600, "hard_bounces": 4, "soft_bounces": 1,
                                                          "complaints": 1, "unsubscribes": 2}
    assert (day1["hard_bounce_rate"], day1["soft_bounce_rate"], day1["complaint_rate"], day1["unsubscribe_rate"]) == (
        0.0067, 0.0017, 0.0017, 0.0033)                   # 4/600, 1/600, 1/600, 2/600
    day2 = _day(d, "nurture", "2026-12-01")
    assert (day2["sent"], day2["complaints"], day2["complaint_rate"], day2["hard_bounces"]) == (500, 2, 0.004, 0)
    total = d["scenarios"]["nurture"]["total"]
    assert (total["sent"], total["hard_bounces"], total["complaints"], total["unsubscribes"]) == (1100, 4, 3, 2)
    webinar = d["scenarios"]["webinar"]
    assert [x["day"] for x in webinar["by_day"]] == ["2026-11-30"] and webinar["total"]["complaint_rate"] == 0.025
    assert webinar["total"]["small_sample"] and not day1["small_sample"]
    assert d["unattributed"] == {k: 0 for k in OUTCOMES}
    assert (d["first_day"], d["last_day"]) == ("2026-11-18", "2026-12-01")


def test_a_day_over_the_complaint_limit_warns_in_words_a_marketer_reads(session, mail):
    rows = mail.sent("whitepaper-nurture", DAY2, 500)
    for row in rows[:2]:
        mail.complaint(row)

    warnings = deliverability(session, now=NOW)["warnings"]

    assert [w["message"] for w in warnings] == [
        "whitepaper-nurture, 2026-12-01: 2 complaints in 500 emails (0.40 %): over the 0.3 % Gmail and Yahoo accept; "
        "check who is mailed and how they opted in, and that the unsubscribe link is easy to find"]
    assert (warnings[0]["level"], warnings[0]["figure"], warnings[0]["day"], warnings[0]["rate"]) == (
        "over", "complaints", "2026-12-01", 0.004)


def test_hard_bounces_warn_from_1_percent_and_say_over_from_2(session, mail):
    rows = mail.sent("nurture", DAY1, 500)
    for row in rows[:4]:
        mail.bounce(row)
    mail.bounce(rows[4], hard=False)  # soft bounces are shown, never warned about
    assert deliverability(session, now=NOW)["warnings"] == []          # 4 of 500: 0.8 %
    mail.bounce(rows[5])
    (approaching,) = deliverability(session, now=NOW)["warnings"]      # 5 of 500: 1 %
    assert approaching["level"] == "approaching" and "above 1 %, approaching the 2 %" in approaching["message"]
    for row in rows[6:11]:
        mail.bounce(row)
    (over,) = deliverability(session, now=NOW)["warnings"]             # 10 of 500: 2 %
    assert over["level"] == "over" and over["message"].startswith("nurture, 2026-11-30: 10 hard bounces in 500 emails (2.00 %)")


def _cells(sent: int, **counts: int) -> dict:
    """A scenario of one sending day of `sent` emails, `counts` of them with each outcome."""
    rows = [(i, "s", date(2026, 12, 1)) for i in range(sent)]
    outcomes: dict[int, set[str]] = {}
    start = 0
    for kind, n in counts.items():
        for i in range(start, start + n):
            outcomes.setdefault(i, set()).add(kind)
        start += n
    return tally(rows, outcomes)


@pytest.mark.parametrize("sent, complaints, level", [
    (1000, 0, None), (1000, 1, "approaching"), (2000, 5, "approaching"), (1000, 3, "over"), (2000, 6, "over"),
    (MIN_SENT, 1, "approaching"), (MIN_SENT - 1, 3, None),  # under MIN_SENT a day is too small to judge
])
def test_complaint_warnings_start_exactly_at_their_thresholds(sent, complaints, level):
    found = warnings_of(_cells(sent, complaints=complaints), days=14)
    assert [w["level"] for w in found if w["figure"] == "complaints"] == ([level] if level else [])


@pytest.mark.parametrize("sent, bounces, level", [(1000, 9, None), (1000, 10, "approaching"), (1000, 19, "approaching"),
                                                  (1000, 20, "over")])
def test_hard_bounce_warnings_start_exactly_at_their_thresholds(sent, bounces, level):
    found = warnings_of(_cells(sent, hard_bounces=bounces), days=14)
    assert [w["level"] for w in found] == ([level] if level else [])


def test_the_thresholds_are_the_published_figures():
    assert (COMPLAINT_WATCH, COMPLAINT_LIMIT) == (Fraction("0.001"), Fraction("0.003"))
    assert (HARD_BOUNCE_WATCH, HARD_BOUNCE_LIMIT) == (Fraction("0.01"), Fraction("0.02"))


def test_a_tiny_day_raises_nothing_but_small_days_that_add_up_warn_for_the_window(session, mail):
    (first,) = mail.sent("nurture", DAY1, 1)
    mail.complaint(first)                      # 1 complaint in 1 email: 100 %, but one email says nothing
    figures = deliverability(session, now=NOW, days=14)
    assert figures["warnings"] == [] and _day(figures, "nurture", "2026-11-30")["small_sample"]
    for back in range(2, 7):                   # five more days of 100 emails, 1 complaint each: 6 in 501
        rows = mail.sent("nurture", DAY2 - timedelta(days=back), 100)
        mail.complaint(rows[0])

    (window,) = deliverability(session, now=NOW, days=14)["warnings"]

    assert window["day"] is None and window["level"] == "over"
    assert window["message"].startswith("nurture, last 14 days: 6 complaints in 501 emails (1.20 %): over the 0.3 %")


def test_events_that_name_no_sent_email_are_counted_apart_and_in_no_rate(session, mail):
    rows = mail.sent("nurture", DAY2, 10)
    (staff,) = mail.sent("nurture", DAY2, 1, kind="internal")
    # typed by hand (`relance event unsubscribed --lead ...`): no email named
    ingest_events(session, workspace=LIBRARY, channel="cli", now=NOW,
                  events=[IncomingEvent("unsubscribed", rows[1].to_address, NOW - timedelta(hours=1), {})])
    session.commit()
    mail.complaint(Outbox(message_id="not-ours", to_address=rows[2].to_address, sent_at=DAY2))  # a message not in the outbox
    mail.bounce(staff)                                                                          # staff mail: not a lead's
    mail.complaint(rows[0])                                                                     # matched by its SES id

    figures = deliverability(session, now=NOW)

    assert figures["unattributed"] == {"hard_bounces": 1, "soft_bounces": 0, "complaints": 1, "unsubscribes": 1}
    total = figures["scenarios"]["nurture"]["total"]
    assert (total["sent"], total["complaints"], total["unsubscribes"], total["hard_bounces"]) == (10, 1, 0, 0)


def test_the_window_holds_the_emails_sent_on_its_days_and_the_scenario_filter_narrows_it(session, mail):
    old = mail.sent("nurture", DAY2 - timedelta(days=14), 5)      # the day before a 14-day window
    mail.complaint(old[0])                                         # about an email outside the window: nowhere
    mail.sent("nurture", DAY2 - timedelta(days=13), 3)
    later = mail.sent("webinar", NOW + timedelta(hours=1), 2)      # after --now
    mail.sent("webinar", DAY2, 4)

    figures = deliverability(session, now=NOW, days=14)

    assert [d["day"] for d in figures["scenarios"]["nurture"]["by_day"]] == ["2026-11-18"]
    assert figures["scenarios"]["webinar"]["total"]["sent"] == 4 and later
    assert figures["unattributed"]["complaints"] == 0
    assert list(deliverability(session, now=NOW, scenario="webinar")["scenarios"]) == ["webinar"]
    assert list(build_report(session, now=NOW, days=1)["deliverability"]["scenarios"]) == ["webinar"]
    with pytest.raises(ValueError, match="days must be 1 to"):
        deliverability(session, now=NOW, days=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 6),
                          st.sets(st.sampled_from(OUTCOMES))), max_size=80))
def test_rates_are_shares_and_the_days_add_up_to_the_total(emails):
    sent = [(i, scenario, date(2026, 12, 1) - timedelta(days=back)) for i, (scenario, back, _o) in enumerate(emails)]
    figures = tally(sent, {i: found for i, (_s, _b, found) in enumerate(emails)})
    for scenario, f in figures.items():
        for row in [*f["by_day"], f["total"]]:
            assert row["hard_bounces"] + row["soft_bounces"] <= row["sent"]
            for k in OUTCOMES:
                assert 0 <= row[k[:-1] + "_rate"] <= 1
        for k in ("sent", *OUTCOMES):
            assert sum(day[k] for day in f["by_day"]) == f["total"][k]
    assert sum(f["total"]["sent"] for f in figures.values()) == len(emails)
    assert sum(f["total"]["complaints"] for f in figures.values()) == sum("complaints" in o for _s, _b, o in emails)


def test_relance_report_prints_the_table_and_the_warning(env):
    from relance.plans import open_store
    from relance.settings import get_settings
    from relance.cli import app

    engine = open_store(get_settings())
    with Session(engine) as session:
        mail = Mail(session)
        rows = mail.sent("whitepaper-nurture", DAY2, 500)
        mail.sent("whitepaper-nurture", DAY1, 7)
        for row in rows[:2]:
            mail.complaint(row)
        mail.unsubscribe(rows[3])
    engine.dispose()

    result = CliRunner().invoke(app, ["report", "--now", NOW.isoformat()], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    out = result.output
    assert "Deliverability whitepaper-nurture, 2026-11-18 to 2026-12-01" in out and "2026-11-30*" in out
    table = [line for line in out.splitlines() if line.strip().startswith(("2026-11-30*", "2026-12-01", "last 14 days"))]
    day = next(line for line in table if line.strip().startswith("2026-12-01"))
    assert day.split() == ["2026-12-01", "500", "0", "0", "2", "1", "0.00", "%", "0.40", "%", "0.20", "%"]
    assert "whitepaper-nurture, 2026-12-01: 2 complaints in 500 emails (0.40 %): over the 0.3 % Gmail and Yahoo" in " ".join(out.split())
    assert len(table) == 3 and max(len(line) for line in table) <= 80  # fits 80 columns, as every table of the report
    figures = json.loads(CliRunner().invoke(app, ["report", "--json", "--now", NOW.isoformat(), "--days", "1"]).output)
    assert figures["deliverability"]["scenarios"]["whitepaper-nurture"]["total"]["complaints"] == 2
    assert [d["day"] for d in figures["deliverability"]["scenarios"]["whitepaper-nurture"]["by_day"]] == ["2026-12-01"]
    refused = CliRunner().invoke(app, ["report", "--days", "0"])
    assert refused.exit_code == 1 and "--days 0: give 1 to" in refused.output and "Traceback" not in refused.output


def test_the_ticks_figures_artifact_carries_the_scenarios_deliverability(session, mail, monkeypatch):
    import relance.tasks.artifacts as artifacts
    from relance.tick_figures import TickReport

    rows = mail.sent("whitepaper-nurture", DAY2, 500)
    mail.sent("webinar", DAY2, 50)
    for row in rows[:2]:
        mail.complaint(row)
    published: dict[str, str] = {}
    monkeypatch.setattr(artifacts, "create_markdown_artifact", lambda markdown, key, description: published.update({key: markdown}))
    monkeypatch.setattr(artifacts, "create_table_artifact", lambda **kw: None)

    artifacts.publish_report.fn(TickReport(scenario="whitepaper-nurture"), session.get_bind(), now=NOW)

    text = published["report-whitepaper-nurture"]
    assert "## Deliverability, 2026-11-18 to 2026-12-01" in text
    assert "| 2026-12-01 | 500 | 0 | 0 | 2 | 0 | 0.00 % | 0.40 % | 0.00 % |" in text
    assert "- **over**: whitepaper-nurture, 2026-12-01: 2 complaints in 500 emails (0.40 %)" in text
    assert "webinar" not in text  # the scenario's own figures only
    quiet = artifacts.deliverability_markdown("welcome", deliverability(session, now=NOW, scenario="welcome"))
    assert quiet.endswith("No email to a lead left on these days.")


@pytest.mark.parametrize("named", [10**30, 2**63, -1, True, "12", 12.0])
def test_an_outbox_id_no_email_has_is_unattributed_and_never_breaks_the_report(session, mail, named):
    (row,) = mail.sent("nurture", DAY2, 1)
    ingest_events(session, workspace=LIBRARY, channel="api", now=NOW,
                  events=[IncomingEvent("email_complained", row.to_address, NOW - timedelta(hours=1), {"outbox_id": named})])
    session.commit()

    figures = deliverability(session, now=NOW)

    assert figures["unattributed"]["complaints"] == 1 and figures["scenarios"]["nurture"]["total"]["complaints"] == 0
