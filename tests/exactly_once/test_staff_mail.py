"""Mail meant for staff carries none of the lead's links; leaving (unsubscribe, complaint, bounce) is not buying."""

from __future__ import annotations

from datetime import timedelta
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from relance.policy import NO_POLICY
from relance.delivery import deliver_pending
from relance.email.templates import TemplateLibrary
from relance.email.transports import FileTransport
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.store.tables import Handoff, Lead, Outbox, StageChange
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[2]
HOT = {"first_name": "Zoé", "job_title": "Directrice marketing", "company": "ACME", "sector": "saas", "country": "FR",
       "company_revenue": "20000000"}


def _shipped(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                    outbox_dir=tmp_path / "outbox", transport="file", public_url="https://track.example.com")


def _hot_lead(engine, workspace, clock, email="zoe@acme.example") -> None:
    """A form, a pricing visit and a demo request: score, grade A, a sales-ready action: handed off."""
    committed(engine, ingest_events, workspace=workspace, events=[
        IncomingEvent("form_submitted", email, clock.now(), HOT),
        IncomingEvent("page_visited", email, clock.now() + timedelta(minutes=1), {"path": "/tarifs"}),
        IncomingEvent("demo_requested", email, clock.now() + timedelta(minutes=2), {}),
    ], now=clock.now() + timedelta(minutes=2))


def test_the_handoff_email_carries_no_unsubscribe_nor_tracking_of_the_lead(engine, db_url, clock, tmp_path):
    settings = _shipped(db_url, tmp_path)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    _hot_lead(engine, workspace, clock)
    deliver_pending(engine, settings, now=clock.now() + timedelta(minutes=3), transport=FileTransport(settings.outbox_dir), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY)
    with Session(engine) as session:
        row = session.execute(select(Outbox.id, Outbox.to_address, Outbox.status).where(Outbox.template == "sales-handoff")).one()
    assert row.status == "sent" and row.to_address.endswith("@example.com")  # the owner, not the lead
    raw = (settings.outbox_dir / f"{row.id}.eml").read_bytes()
    message = BytesParser(policy=compat32).parsebytes(raw)  # another parser than the one that wrote it
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    body = b"".join(part.get_payload(decode=True) or b"" for part in message.walk() if not part.is_multipart()).decode()
    for path in ("/u/", "/c/", "/o/"):
        assert f"https://track.example.com{path}" not in body, f"the owner's email links to the lead's {path}"
    assert "Se désinscrire" not in body and "Email interne de relance" in body
    assert "zoe@acme.example" in body  # it is about the lead, with her profile


def test_an_unsubscribe_withdraws_the_handoff_and_tells_its_owner(engine, db_url, clock, tmp_path):
    settings = _shipped(db_url, tmp_path)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    _hot_lead(engine, workspace, clock)
    later = clock.now() + timedelta(hours=1)
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("unsubscribed", "zoe@acme.example", later, {})], now=later)
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("page_visited", "zoe@acme.example", later, {"path": "/tarifs"})], now=later)
    with Session(engine) as session:
        handoffs = session.execute(select(Handoff.status, Handoff.reason, Handoff.owner)).all()
        lead = session.execute(select(Lead.stage, Lead.suppressed)).one()
        moves = [(m.from_stage, m.to_stage, m.by) for m in session.execute(select(StageChange).order_by(StageChange.id)).scalars()]
        told = session.execute(select(Outbox.to_address, Outbox.subject).where(Outbox.step_id.like("withdrawn:%"))).all()
    assert [(h.status, h.reason) for h in handoffs] == [("withdrawn", "unsubscribed")]  # no new hand-off after it
    assert (lead.stage, lead.suppressed) == ("disqualified", "unsubscribed")
    assert moves[-1] == ("sql-pending", "disqualified", "event:unsubscribed")
    assert [t.to_address for t in told] == [handoffs[0].owner] and told[0].subject.startswith("Lead retiré")


def test_leaving_never_hands_a_lead_to_sales(engine, db_url, clock, tmp_path):
    """A demo request, then an unsubscribe that would still leave the score above the line: no hand-off, no MQL move."""
    settings = _shipped(db_url, tmp_path)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    for event in ("unsubscribed", "email_complained", "email_bounced"):
        email = f"{event}@acme.example"
        committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("form_submitted", email, clock.now(), {"first_name": "Zoé"}),
                                        IncomingEvent("demo_requested", email, clock.now(), {})], now=clock.now())
        with Session(engine) as session:  # then scoring.yaml changes and a regrade makes her fit A: not handed off yet
            session.execute(Lead.__table__.update().where(Lead.email == email).values(score=500, grade="A", fit=90))
            session.commit()
        committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent(event, email, clock.now() + timedelta(minutes=1), {})], now=clock.now() + timedelta(minutes=1))
        with Session(engine) as session:
            lead = session.execute(select(Lead.id, Lead.stage, Lead.suppressed).where(Lead.email == email)).one()
            assert session.execute(select(Handoff.id).where(Handoff.lead_id == lead.id)).first() is None, event
            assert lead.stage in ("lead", "mql") and lead.suppressed is not None, (event, lead)
