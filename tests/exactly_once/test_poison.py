"""One bad lead, row or message never stops the others; its failure is kept on its row, with the step and reason."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlmodel import Session

from recording import RecordingTransport  # tests/recording.py
from relance.email.templates import TemplateLibrary
from relance.workspace import load_workspace
from typer.testing import CliRunner

from relance.cli import app
from relance.leads import lead_summary
from relance.plans import sync_scenarios
from relance.report import build_report
from relance.scoring.config import ScoringConfig
from relance.settings import get_settings
from relance.store.tables import Enrollment, Lead, Outbox
from relance.tick import run_tick_inline

from harness import add_leads
from tests.units import committed

HOOK = """\
scenario: hook
trigger: {segment: {stage_in: [lead]}}
steps:
  - id: bump
    score: +1000
  - id: hello
    send: hello
    subject: "Bonjour {{ lead.first_name }}"
  - id: tell
    notify: {webhook: "http://localhost:9/hook"}  # refused when sent: localhost is this machine
"""


def test_a_bad_address_a_bad_url_and_a_score_overflow_fail_alone(engine, settings, clock, folder, monkeypatch):
    (folder / "scenarios" / "drip.yaml").unlink()
    (folder / "scenarios" / "guide.yaml").unlink()
    (folder / "scenarios" / "hook.yaml").write_text(HOOK, encoding="utf-8")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = add_leads(engine, clock.now(), 100)
    with Session(engine) as session:  # as an old import or a hand-written row could have left them
        session.execute(update(Lead).where(Lead.email == emails[10]).values(email="mid@x.example\r\nBcc: victim@evil.example"))
        session.execute(update(Lead).where(Lead.email == emails[20]).values(score=2**63 - 10))  # 64 bits on both backends
        session.commit()
    transport = RecordingTransport()
    report = run_tick_inline(engine, settings, scenario="hook", now=clock.now(), workspace=workspace, transport=transport, batch_size=50, templates=TemplateLibrary(settings.templates_dir))
    assert report.sent == 98 and len(transport.sent) == 98  # the 98 good leads were mailed
    assert report.enrollments_failed == 1 and report.failed >= 1
    with Session(engine) as session:
        failed = session.execute(select(Enrollment.lead_id, Enrollment.exit_reason).where(Enrollment.status == "failed")).all()
        overflow = session.execute(select(Lead.id).where(Lead.score > 2**63 - 20)).scalar()
        assert [f.lead_id for f in failed] == [overflow] and failed[0].exit_reason.startswith("error at step bump:")
        bad = session.execute(select(Outbox.status, Outbox.error).where(Outbox.to_address.like("mid@x.example%"))).one()
        assert bad.status == "failed" and "line break" in bad.error
        webhooks = session.execute(select(Outbox.status, Outbox.error).where(Outbox.kind == "webhook")).all()
        assert len(webhooks) == 99 and {w.status for w in webhooks} == {"failed"} and all(w.error for w in webhooks)
    # nothing is left due or pending: a second tick has nothing to retry, and nobody is mailed twice
    again = run_tick_inline(engine, settings, scenario="hook", now=clock.now() + timedelta(hours=1), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert again.sent == 0 and again.advanced == 0 and len(transport.sent) == 98
    # the failure is shown where people look
    summary = committed(engine, lead_summary, email=emails[20], scoring=ScoringConfig())
    assert summary["enrollments"][0]["status"] == "failed" and "bump" in summary["enrollments"][0]["exit_reason"]
    with Session(engine) as session:
        figures = build_report(session, now=clock.now())["delivery"]
    assert figures["failed_enrollments"] == [{"scenario": "hook", "step_id": "bump", "count": 1,
                                              "reason": failed[0].exit_reason}]
    # and `relance lead show` says it, as a person reads it (wide enough not to fold the reason)
    for key, value in {"RELANCE_DATABASE_URL": settings.database_url, "RELANCE_SCENARIOS_DIR": str(settings.scenarios_dir),
                       "RELANCE_TEMPLATES_DIR": str(settings.templates_dir), "COLUMNS": "250"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(app, ["lead", "show", emails[20]], catch_exceptions=False).output
        bad = CliRunner().invoke(app, ["lead", "show", emails[30]], catch_exceptions=False).output
    finally:
        get_settings.cache_clear()
    shown, bad = " ".join(shown.split()), " ".join(bad.split())  # entries wrap at words in 80 columns
    assert "failed" in shown and "error at step bump" in shown
    assert "hook/tell" in bad and "failed" in bad  # the webhook the lead's step could not post
