"""One lead through the HTTP API and the SES queue, on the shipped scenarios, both backends:
form, download, tracked open and click, case-study download waking the wait, pricing visits,
then a complaint through SES and an unsubscribe through the API."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session

from relance.api.app import create_app
from relance.email.templates import TemplateLibrary
from relance.email.transports import FileTransport
from relance.leads import lead_summary
from relance.plans import sync_scenarios
from relance.scoring.config import ScoringConfig
from relance.ses_events import drain
from relance.settings import Settings
from relance.store.tables import Outbox
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "e2e-token-of-the-tests"
EMAIL = "claire.dubois@acme-saas.example"


def test_a_lead_is_scored_graded_woken_and_suppressed_from_what_it_really_does(engine, db_url, clock, sqs, tmp_path):
    settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key="e2e-secret", public_url="https://t.example", api_token=TOKEN)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    api = TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock))
    transport = FileTransport(settings.outbox_dir)
    queue = sqs.create_queue(QueueName=f"e2e-{engine.dialect.name}")["QueueUrl"]

    def post(*events):
        response = api.post("/events", json=list(events), headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        return response.json()

    def tick():
        return run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))

    def last_email():
        path = max(settings.outbox_dir.glob("*.eml"), key=lambda p: int(p.stem))
        return message_from_bytes(path.read_bytes(), policy=default)

    # a form, then the white-paper download: a graded lead enters the nurture
    post({"type": "form_submitted", "email": EMAIL, "properties": {"first_name": "Claire", "job_title": "Directrice marketing",
          "company": "ACME SaaS", "sector": "saas", "company_revenue": 25000000, "country": "FR", "source": "webinar"},
          "consent": {"source": "webinar", "wording": "J'accepte de recevoir les emails de Relance."}})
    assert post({"type": "downloaded", "email": EMAIL, "properties": {"asset": "livre-blanc-leads"}})["enrolled"] == 1
    assert tick().sent == 1
    guide = last_email()
    lead = committed(engine, lead_summary, email=EMAIL, scoring=ScoringConfig())
    assert (lead["grade"], lead["score"]) == ("A", 10 + 5)

    # SES says it was delivered and opened (SNS envelopes, delivered twice)
    with Session(engine) as session:
        message_id = session.exec(select(Outbox.message_id)).scalars().one()
    for kind in ("Delivery", "Open", "Open"):
        event = {"eventType": kind, "mail": {"messageId": message_id, "destination": [EMAIL], "timestamp": "2026-01-05T09:00:00Z"},
                 kind.lower(): {"timestamp": "2026-01-05T11:00:00Z"}}
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"Type": "Notification", "Message": json.dumps(event)}))
    assert committed(engine, drain, workspace=workspace, sqs=sqs, queue_url=queue, clock=clock, wait_seconds=0).duplicates == 1

    # the tracked click redirects and scores; three days later the open sends the case study
    click = re.search(r'href="https://t\.example(/c/[^"]+)"', next(p.get_content() for p in guide.iter_parts() if p.get_content_type() == "text/html")).group(1)
    clock.advance(timedelta(minutes=2))  # she reads it first: a click seconds after the sending is a scanner's
    assert api.get(click, follow_redirects=False).status_code == 302
    clock.advance(timedelta(days=3))
    assert tick().sent == 1 and last_email()["Subject"] == "Comment ACME a doublé ses MQL"
    waiting = committed(engine, lead_summary, email=EMAIL, scoring=ScoringConfig())["enrollments"][0]
    assert (waiting["step_id"], waiting["waiting"]["kind"]) == ("wait-download", "wait_until")

    # downloading the case study wakes the wait at once; pricing visits reach the hand-off point
    woke = post({"type": "downloaded", "email": EMAIL, "properties": {"asset": "etude-de-cas"}})
    assert woke["woken"] == 1
    post(*({"type": "page_visited", "email": EMAIL, "properties": {"path": f"/tarifs/{p}"}} for p in ("pro", "entreprise", "comparatif")))
    tick()
    lead = committed(engine, lead_summary, email=EMAIL, scoring=ScoringConfig())
    assert lead["score"] == 10 + 5 + 1 + 3 + 5 + 3 * 10 + 15  # form, download, first open, click, case study, 3 visits, bump
    assert lead["stage"] == "sql-pending"
    assert [(s["from"], s["to"]) for s in lead["stage_history"]] == [("lead", "mql"), ("mql", "sql-pending")]
    assert {c["cause"] for c in lead["score_ledger"]} >= {"form_submitted", "email_opened", "email_clicked", "page_visited", "step"}

    # a complaint through SES suppresses at once; the later unsubscribe changes nothing but is recorded once
    complaint = {"eventType": "Complaint", "mail": {"messageId": message_id, "destination": [EMAIL], "timestamp": "2026-01-05T09:00:00Z"},
                 "complaint": {"timestamp": "2026-01-08T12:00:00Z", "complainedRecipients": [{"emailAddress": EMAIL}]}}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(complaint))
    assert committed(engine, drain, workspace=workspace, sqs=sqs, queue_url=queue, clock=clock, wait_seconds=0).suppressed == 1
    unsubscribe = guide["List-Unsubscribe"].strip("<>").removeprefix("https://t.example")
    assert api.post(unsubscribe, content="List-Unsubscribe=One-Click").status_code == 200
    lead = committed(engine, lead_summary, email=EMAIL, scoring=ScoringConfig())
    assert lead["suppression"] == {"suppressed": True, "reason": "complained"}
    sqs.delete_queue(QueueUrl=queue)
