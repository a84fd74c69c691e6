"""A tick end to end on a real database (SQLite and PostgreSQL), without Prefect."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from relance.delivery import deliver
from relance.email.templates import TemplateLibrary
from relance.email.transports import FileTransport
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Enrollment, Lead, Outbox, StepLog
from relance.tick import run_tick_inline
from relance.workspace import load_workspace

from recording import RecordingTransport  # tests/recording.py
from tests.units import committed
from tests.basis import professional

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}, voici {{ scenario }}/{{ step_id }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""

NURTURE = """\
scenario: nurture
trigger: {event: downloaded, where: {asset: guide}}
exit_when:
  - stage_in: [customer]
steps:
  - id: send-guide
    send: hello
    subject: "{{ lead.first_name }}, votre guide"
  - id: pause
    wait: 3d
  - id: opened?
    if: {opened: send-guide}
    then: bump
    else: reminder
  - id: reminder
    send: hello
    subject: "Vous l'avez lu ?"
    next: wait-case
  - id: bump
    score: +15
  - id: wait-case
    wait_until: {event: downloaded, where: {asset: case}}
    timeout: 7d
    on_timeout: timed-out
  - id: got-case
    set: {tag: case-study}
    next: done
  - id: timed-out
    set: {tag: no-case}
  - id: done
    end: true
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hello.mjml").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / "scenarios" / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def settings(folder: Path, db_url: str) -> Settings:
    return Settings(
        database_url=db_url, scenarios_dir=folder / "scenarios", templates_dir=folder / "templates",
        outbox_dir=folder / "outbox", transport="null",
    )


def _leads(engine, now, n: int) -> list[str]:
    emails = [f"lead{i}@acme.example" for i in range(n)]
    with Session(engine) as session:
        for i, email in enumerate(emails):
            upsert_lead(session, email=email, now=now, first_name=f"Léa{i}", company="ACME", fields=professional())
        session.commit()
    return emails


def _download(engine, workspace, emails, asset, now):
    return committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("downloaded", e, now, {"asset": asset}) for e in emails], now=now)


def _path(engine, email_index: int) -> list[tuple[str, str]]:
    with Session(engine) as session:
        enrollment = session.exec(select(Enrollment).order_by(Enrollment.id).offset(email_index)).scalars().first()
        rows = session.exec(select(StepLog).where(StepLog.enrollment_id == enrollment.id).order_by(StepLog.id)).scalars()
        return [(r.step_id, r.outcome) for r in rows]


def test_a_download_enrolls_sends_waits_and_branches_on_the_open(engine, settings, clock):
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = _leads(engine, clock.now(), 2)
    assert _download(engine, workspace, emails, "guide", clock.now()).enrolled == 2
    transport = RecordingTransport()

    report = run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert report.sent == 2 and [m.to for m in transport.sent] == emails
    assert transport.sent[0].subject == "Léa0, votre guide"
    assert "{{" not in transport.sent[0].html and "Léa0" in transport.sent[0].text

    # lead 0 opens the email; lead 1 does not
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("email_opened", emails[0], clock.now() + timedelta(hours=2),
                                                  {"scenario": "nurture", "step_id": "send-guide"})], now=clock.now())
    assert run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(days=1)), workspace=workspace,
                           transport=transport, templates=TemplateLibrary(settings.templates_dir)).sent == 0
    report = run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(days=2)), workspace=workspace,
                             transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert report.sent == 1 and transport.sent[-1].to == emails[1]
    assert ("opened?", "then") in _path(engine, 0)
    assert "bump" in [step for step, _ in _path(engine, 0)]
    assert ("opened?", "else") in _path(engine, 1)


def test_an_awaited_event_wakes_the_lead_before_its_timeout(engine, settings, clock):
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = _leads(engine, clock.now(), 2)
    _download(engine, workspace, emails, "guide", clock.now())
    transport = RecordingTransport()
    run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(days=3)), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))

    woke = _download(engine, workspace, emails[:1], "case", clock.advance(timedelta(days=1)))
    assert woke.woken == 1
    run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    with Session(engine) as session:
        statuses = {e.lead_id: (e.status, e.step_id) for e in session.exec(select(Enrollment)).scalars()}
    assert sorted(statuses.values()) == [("active", "wait-case"), ("completed", "done")]

    run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(days=7)), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert ("wait-case", "timeout") in _path(engine, 1)
    assert ("got-case", "done") not in _path(engine, 1)


def test_a_worker_stopped_mid_batch_never_sends_anything_twice(engine, settings, clock, tmp_path):
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = _leads(engine, clock.now(), 6)
    _download(engine, workspace, emails, "guide", clock.now())

    class StoppedAfter(FileTransport):  # the worker is stopped (a signal, a deploy) during its fourth send
        def __init__(self, directory, limit):
            super().__init__(directory)
            self.limit = limit

        def send(self, email):
            if self.limit == 0:
                raise SystemExit("worker stopped")
            self.limit -= 1
            return super().send(email)

    outbox_dir = tmp_path / "outbox"
    with pytest.raises(SystemExit):
        run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace,
                        transport=StoppedAfter(outbox_dir, 3), templates=TemplateLibrary(settings.templates_dir))
    assert len(list(outbox_dir.glob("*.eml"))) == 3
    with Session(engine) as session:
        statuses = sorted(session.exec(select(Outbox.status)).scalars().all())
    assert statuses == ["pending", "pending", "sending", "sent", "sent", "sent"]  # only the one in flight is in doubt

    # the tick runs again: the three sent stay sent, the two never tried go now, the one cut off is not resent
    run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace, transport=FileTransport(outbox_dir), templates=TemplateLibrary(settings.templates_dir))
    recipients = [message_from_bytes(f.read_bytes())["To"] for f in outbox_dir.glob("*.eml")]
    assert len(recipients) == 5 == len(set(recipients))
    later = run_tick_inline(engine, settings, scenario="nurture", now=clock.now() + timedelta(minutes=11), workspace=workspace,
                            transport=FileTransport(outbox_dir), templates=TemplateLibrary(settings.templates_dir))
    assert later.cut_off == 1 and len(list(outbox_dir.glob("*.eml"))) == 5  # found, made `unknown`, still not resent
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Outbox).where(Outbox.status == "sent")).one()[0] == 5


def test_editing_a_live_scenario_keeps_leads_on_the_version_they_entered(engine, settings, clock):
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    first, second = _leads(engine, clock.now(), 2)
    _download(engine, workspace, [first], "guide", clock.now())
    transport = RecordingTransport()
    run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))

    edited = NURTURE.replace("wait: 3d", "wait: 1d").replace("Vous l'avez lu ?", "Nouvelle relance")
    (settings.scenarios_dir / "nurture.yaml").write_text(edited, encoding="utf-8")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    _download(engine, workspace, [second], "guide", clock.now())
    run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))

    run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(days=1, hours=1)), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert [m.subject for m in transport.sent if m.to == second][-1] == "Nouvelle relance"
    assert all(m.subject != "Nouvelle relance" for m in transport.sent if m.to == first)
    run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(days=2)), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert [m.subject for m in transport.sent if m.to == first][-1] == "Vous l'avez lu ?"
    with Session(engine) as session:
        versions = {e.lead_id: e.version_id for e in session.exec(select(Enrollment)).scalars()}
    assert len(set(versions.values())) == 2


def test_suppressed_addresses_are_never_mailed_and_the_outbox_says_why(engine, settings, clock):
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = _leads(engine, clock.now(), 3)
    with Session(engine) as session:
        for lead, reason in zip(session.exec(select(Lead).order_by(Lead.id)).scalars(), ("bounced", "complained", None)):
            lead.suppressed = reason
        session.commit()
    _download(engine, workspace, emails, "guide", clock.now())
    transport = RecordingTransport()
    report = run_tick_inline(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert [m.to for m in transport.sent] == [emails[2]] and report.skipped == 2
    with Session(engine) as session:
        reasons = sorted(o.error for o in session.exec(select(Outbox).where(Outbox.status == "skipped")).scalars())
    assert reasons == ["suppressed: bounced", "suppressed: complained"]


MONTHLY = """\
scenario: monthly
trigger:
  segment:
    all: [{stage_in: [nurturing]}, {grade_at_least: C}]
reentry: {after: 30d}
steps:
  - id: letter
    send: hello
    subject: "La lettre du mois"
"""


def test_a_segment_scenario_mails_the_segment_once_per_reentry_period(engine, settings, folder, clock):
    (folder / "scenarios" / "monthly.yaml").write_text(MONTHLY, encoding="utf-8")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = _leads(engine, clock.now(), 6)
    with Session(engine) as session:  # leads 0-3 nurtured (lead 3 graded D), 4 an MQL, 5 nurtured but unsubscribed
        for lead in session.exec(select(Lead)).scalars():
            i = int(lead.email[4])
            lead.stage = "mql" if i == 4 else "nurturing"
            lead.grade = "D" if i == 3 else "B"
            lead.suppressed = "unsubscribed" if i == 5 else None
        session.commit()

    def tick() -> list[str]:
        transport = RecordingTransport()
        run_tick_inline(engine, settings, scenario="monthly", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
        return sorted(m.to for m in transport.sent)

    assert tick() == emails[:3]
    clock.advance(timedelta(days=10))
    assert tick() == []  # left after one step, but 30 days have not passed
    clock.advance(timedelta(days=21))
    assert tick() == emails[:3]
    assert tick() == []
    with Session(engine) as session:
        entered = session.exec(select(func.count()).select_from(StepLog).where(StepLog.kind == "enter")).one()[0]
    assert entered == 6  # every entry leaves its trace row


def test_messages_left_pending_leave_with_the_next_tick_or_expire_after_two_days(engine, settings, folder, clock):
    from relance.advancing import advance_due
    from relance.sales import open_handoff
    from relance.scoring.config import ScoringConfig

    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = _leads(engine, clock.now(), 3)
    _download(engine, workspace, emails[:2], "guide", clock.now())
    advance_due(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace)  # written, then the worker died
    with Session(engine) as session:  # a hand-off made by ingestion, between two ticks
        lead = session.exec(select(Lead).where(Lead.email == emails[2])).scalars().one()
        open_handoff(session, lead, scoring=ScoringConfig.model_validate({"sales": {"owners": ["claire@example.com"]}}),
                     now=clock.now(), source="test")
        session.commit()

    transport = RecordingTransport()
    report = run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(minutes=10)),
                             workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert report.leftovers == 3 and report.sent == 0
    assert sorted(m.to for m in transport.sent) == ["claire@example.com", *emails[:2]]
    [note] = [m for m in transport.sent if m.to == "claire@example.com"]
    assert "À contacter avant" in note.text and "lead2@acme.example" in note.text and "Léa2" in note.subject

    _download(engine, workspace, [emails[2]], "guide", clock.now())
    advance_due(engine, settings, scenario="nurture", now=clock.now(), workspace=workspace)
    late = RecordingTransport()
    report = run_tick_inline(engine, settings, scenario="nurture", now=clock.advance(timedelta(hours=49)),
                             workspace=workspace, transport=late, templates=TemplateLibrary(settings.templates_dir))
    assert report.leftovers == 0 and [m.to for m in late.sent if m.to == emails[2]] == []
    with Session(engine) as session:
        expired = session.exec(select(Outbox).where(Outbox.to_address == emails[2])).scalars().one()
    assert (expired.status, expired.error) == ("failed", "expired: still pending 48 h after it was written")


def test_a_score_step_that_crosses_the_mql_line_makes_the_lead_an_mql(engine, tmp_path, db_url, clock):
    """Points from a scenario step count like points from an event: the stage follows at once."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "scoring.yaml").write_text("mql: {score_at_least: 40, grade_at_least: D}\n", encoding="utf-8")
    (tmp_path / "s" / "boost.yaml").write_text(
        "scenario: boost\ntrigger: {event: downloaded}\nsteps:\n  - {id: bump, score: +45}\n"
        "  - {id: pause, wait: 1d}\n", encoding="utf-8")
    settings = Settings(database_url=db_url, scenarios_dir=tmp_path / "s", templates_dir=tmp_path / "s", transport="null")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    (email,) = _leads(engine, clock.now(), 1)
    _download(engine, workspace, [email], "guide", clock.now())

    run_tick_inline(engine, settings, scenario="boost", now=clock.now(), workspace=workspace, transport=RecordingTransport(), templates=TemplateLibrary(settings.templates_dir))

    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == email)).scalars().one()
    assert (lead.score, lead.stage) == (45, "mql")  # the download earns nothing here: the step's points did it
