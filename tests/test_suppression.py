"""Suppression from every door, at once (both backends).

Whatever the source (the one-click link, `relance event`, `POST /events`, SES through SQS, a
suppression list imported with `relance suppress import`, `relance suppress add`), the address
lands on the suppression list with its reason and source, its lead is flagged, the marketing
email already waiting in the outbox for it is cancelled (`skipped`, with the reason) while an
internal email about the lead still goes, and a real delivery run sends nothing to the address.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.policy import NO_POLICY
from relance.api.app import create_app
from relance.cli import app as cli
from relance.clock import FrozenClock
from relance.delivery import deliver_pending
from relance.email import tracking
from recording import RecordingTransport  # tests/recording.py
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.ses_events import drain
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from relance.store.tables import Event, Lead, Outbox, Suppression
from relance.tick import run_tick_inline
from relance.workspace import Workspace, load_workspace
from tests.units import committed
from tests.basis import professional

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-of-the-tests"
LEA = "lea@acme.example"  # the address every test suppresses
BOB = "bob@globex.example"  # a bystander: his email must still leave
OWNER = "jeanne@relance.example"  # the sales rep an internal email about Léa goes to


@dataclass
class World:
    engine: Engine
    settings: Settings
    workspace: Workspace
    clock: FrozenClock
    lea: int
    sent: int  # the email Léa received (its links carry the unsubscribe token, SES knows its message id)
    pending: int  # Léa's next marketing email, written but not yet handed to the transport
    internal: int  # an email about Léa to her sales rep, not yet sent
    bystander: int  # Bob's pending marketing email


@pytest.fixture
def world(engine, clock, tmp_path, db_url) -> World:
    settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key="k" * 32, public_url="https://t.relance.example",
                        api_token=TOKEN)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    now = clock.now()
    with Session(engine) as session:
        lea = upsert_lead(session, email=LEA, now=now, first_name="Léa", company="ACME", fields=professional())
        bob = upsert_lead(session, email=BOB, now=now, first_name="Bob", company="Globex", fields=professional())

        def outbox(lead, step, template, **kw) -> Outbox:
            row = Outbox(lead_id=lead.id, scenario="whitepaper-nurture", step_id=step, template=template, subject="Bonjour",
                         to_address=kw.pop("to", lead.email), created_at=now, **kw)
            session.add(row)
            return row

        rows = [
            outbox(lea, "send-guide", "whitepaper-followup", status="sent", message_id="ses-msg-1", sent_at=now, options={}),
            outbox(lea, "reminder", "whitepaper-reminder", options={}),  # kind defaults to "lead"
            outbox(lea, "notify-owner", "whitepaper-reminder", to=OWNER, kind="internal"),
            outbox(bob, "reminder", "whitepaper-reminder", kind="lead"),
        ]
        session.commit()
        return World(engine, settings, workspace, clock, lea.id, *(row.id for row in rows))


def assert_suppressed_everywhere(world: World, *, reason: str, source: str, email: str = LEA) -> None:
    """On the list with its reason and source, the lead flagged, its pending marketing email cancelled
    (the internal one and the bystander's left to go), and a real delivery run sends nothing to it."""
    with Session(world.engine) as session:
        entry = session.get(Suppression, email)
        assert entry is not None, f"{email} is not on the suppression list"
        assert (entry.reason, entry.source) == (reason, source)
        lead = session.exec(select(Lead).where(Lead.email == email)).scalars().one()
        assert lead.suppressed == reason
        rows = {row.id: row for row in session.exec(select(Outbox)).scalars()}
    assert (rows[world.pending].status, rows[world.pending].error) == ("skipped", f"suppressed: {reason}")
    assert rows[world.internal].status == "pending" and rows[world.bystander].status == "pending"
    assert rows[world.sent].status == "sent"  # what already left is left alone

    transport = RecordingTransport()
    delivered = deliver_pending(world.engine, world.settings, now=world.clock.now(), transport=transport, templates=TemplateLibrary(world.settings.templates_dir), manager=None, policy=NO_POLICY)
    assert email not in [sent.to for sent in transport.sent]
    assert sorted(sent.to for sent in transport.sent) == [BOB, OWNER], delivered.errors
    with Session(world.engine) as session:
        assert session.get(Outbox, world.pending).status == "skipped"
        assert session.get(Outbox, world.internal).status == "sent"


def assert_not_suppressed(world: World) -> None:
    with Session(world.engine) as session:
        assert session.get(Suppression, LEA) is None
        assert session.get(Lead, world.lea).suppressed is None
        assert session.get(Outbox, world.pending).status == "pending"


def _events(engine, type_: str) -> list[Event]:
    with Session(engine) as session:
        return session.exec(select(Event).where(Event.type == type_)).scalars().all()


SUPPRESSING = [("unsubscribed", {}, "unsubscribed"), ("email_bounced", {"bounce_type": "permanent"}, "bounced"),
               ("email_complained", {}, "complained")]


# --------------------------------------------------------------------------- the one-click link


def test_the_one_click_link_suppresses_through_the_event_once_and_keeps_rfc_8058(world):
    client = TestClient(create_app(world.settings, engine=world.engine, workspace=world.workspace, clock=world.clock))
    url = tracking.unsubscribe_url(public_url=world.settings.public_url, secret=world.settings.secret_key,
                                   outbox_id=world.sent, lead_id=world.lea, email=LEA)
    path = url.removeprefix("https://t.relance.example")
    page = client.get(path)
    assert page.status_code == 200 and "<form method=post" in page.text
    assert client.post(path, content="nothing").status_code == 400  # RFC 8058: the one-click body or nothing
    assert_not_suppressed(world)
    for _ in range(2):  # mail clients post it more than once
        response = client.post(path, content="List-Unsubscribe=One-Click",
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200 and "Vous êtes désinscrit" in response.text
    [event] = _events(world.engine, "unsubscribed")
    assert event.properties["outbox_id"] == world.sent
    assert "Vous êtes désinscrit" in client.get(path).text
    assert_suppressed_everywhere(world, reason="unsubscribed", source="link:unsubscribed")


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def env(world, tmp_path, monkeypatch, db_url) -> World:
    """`relance` commands on the world's database (settings from the environment, as an operator runs them)."""
    monkeypatch.setenv("RELANCE_DATABASE_URL", db_url)
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(ROOT / "scenarios"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(ROOT / "templates" / "emails"))
    monkeypatch.setenv("RELANCE_OUTBOX_DIR", str(tmp_path / "outbox"))
    get_settings.cache_clear()
    yield world
    get_settings.cache_clear()


def relance(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(("type_", "properties", "reason"), SUPPRESSING, ids=[t for t, _, _ in SUPPRESSING])
def test_relance_event_suppresses(env, type_, properties, reason):
    result = relance("event", type_, "--lead", LEA, *(f"--prop={k}={v}" for k, v in properties.items()))
    assert result.exit_code == 0, result.output
    assert_suppressed_everywhere(env, reason=reason, source=f"cli:{type_}")
    assert "suppressed: never mailed again" in result.output


def test_relance_suppress_add_list_and_lead_show(env):
    result = relance("suppress", "add", "Lea@ACME.example", "--reason", "manual")
    assert result.exit_code == 0 and "lea@acme.example: suppressed (manual)" in result.output, result.output
    again = relance("suppress", "add", LEA, "--reason", "complained")
    assert "already on the list (manual, cli:suppress-add" in again.output  # the first reason is kept
    assert relance("suppress", "add", "ghost@nowhere.example").exit_code == 0  # not a lead (yet): listed all the same
    assert relance("suppress", "add", "not-an-email").exit_code != 0
    assert relance("suppress", "add", BOB, "--reason", "because").exit_code != 0

    listed = json.loads(relance("suppress", "list", "--json").output)
    assert [(e["email"], e["reason"], e["source"], e["lead"]) for e in listed] == [
        (LEA, "manual", "cli:suppress-add", True), ("ghost@nowhere.example", "manual", "cli:suppress-add", False)]
    shown = json.loads(relance("lead", "show", LEA, "--json").output)
    assert shown["suppression"] == {"suppressed": True, "reason": "manual"}
    assert shown["suppression_list"]["source"] == "cli:suppress-add" and shown["suppression_list"]["at"]
    assert re.search(r"suppressed\s*\W\s*manual \(cli:suppress-add, \d{4}-\d\d-\d\d \d\d:\d\d UTC\)",
                     relance("lead", "show", LEA).output)
    assert_suppressed_everywhere(env, reason="manual", source="cli:suppress-add")


# --------------------------------------------------------------------------- POST /events


def _post(world: World, body):
    client = TestClient(create_app(world.settings, engine=world.engine, workspace=world.workspace, clock=world.clock))
    return client.post("/events", json=body, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize(("type_", "properties", "reason"), SUPPRESSING, ids=[t for t, _, _ in SUPPRESSING])
def test_post_events_suppresses(world, type_, properties, reason):
    response = _post(world, {"type": type_, "email": LEA, "properties": properties})
    assert response.status_code == 200 and response.json()["stored"] == 1, response.text
    assert_suppressed_everywhere(world, reason=reason, source=f"api:{type_}")


def test_a_transient_bounce_does_not_suppress_and_a_permanent_one_then_does(world):
    response = _post(world, {"type": "email_bounced", "email": LEA, "properties": {"bounce_type": "transient"}})
    assert response.status_code == 200 and response.json()["stored"] == 1
    assert_not_suppressed(world)
    response = _post(world, {"type": "email_bounced", "email": LEA, "properties": {"bounce_type": "Permanent"}})
    assert response.status_code == 200 and response.json()["stored"] == 1
    assert_suppressed_everywhere(world, reason="bounced", source="api:email_bounced")


# --------------------------------------------------------------------------- SES through SQS


def _ses_bounce(bounce_type: str, at: str, recipients: list[str]) -> dict:
    return {
        "eventType": "Bounce",
        "bounce": {
            "feedbackId": "0102017a-bounce-feedback", "bounceType": bounce_type,
            "bounceSubType": "General" if bounce_type == "Permanent" else "MailboxFull",
            "bouncedRecipients": [{"emailAddress": r, "action": "failed", "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"} for r in recipients],
            "timestamp": at, "reportingMTA": "dsn; a8-27.smtp-out.amazonses.com",
        },
        "mail": _ses_mail(),
    }


def _ses_complaint(at: str) -> dict:
    return {
        "eventType": "Complaint",
        "complaint": {"feedbackId": "0102017a-complaint-feedback", "complaintSubType": None,
                      "complainedRecipients": [{"emailAddress": LEA}], "timestamp": at,
                      "userAgent": "Yahoo!-Mail-Feedback/2.0", "complaintFeedbackType": "abuse",
                      "arrivalDate": "2026-01-05T09:04:00.000Z"},
        "mail": _ses_mail(),
    }


def _ses_mail() -> dict:
    return {"timestamp": "2026-01-05T09:00:00.000Z", "source": "marketing@example.com",
            "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.com", "sendingAccountId": "123456789012",
            "messageId": "ses-msg-1", "destination": [LEA], "headersTruncated": False,
            "commonHeaders": {"from": ["Relance <marketing@example.com>"], "to": [LEA], "subject": "Léa, votre livre blanc"},
            "tags": {"ses:configuration-set": ["relance"], "scenario": ["whitepaper-nurture"], "step": ["send-guide"]}}


def _sns(event: dict) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "0a1b2c3d-sns", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-events",
                       "Message": json.dumps(event), "Timestamp": "2026-01-05T09:05:01.000Z", "SignatureVersion": "1"})


@pytest.fixture
def queue(sqs, request):
    url = sqs.create_queue(QueueName=f"supp-{request.node.name[-40:].replace('[', '-').replace(']', '')}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def _drain(world: World, sqs, queue, tmp_path):
    return committed(world.engine, drain, workspace=world.workspace, sqs=sqs, queue_url=queue, clock=world.clock, set_aside_dir=tmp_path / "aside", wait_seconds=0)


def test_an_ses_permanent_bounce_suppresses_the_lead_and_every_address_it_names(world, sqs, queue, tmp_path):
    sqs.send_message(QueueUrl=queue, MessageBody=_sns(_ses_bounce("Transient", "2026-01-05T09:03:00.000Z", [LEA])))
    report = _drain(world, sqs, queue, tmp_path)
    assert (report.stored, report.suppressed) == (1, 0)
    assert_not_suppressed(world)

    permanent = _sns(_ses_bounce("Permanent", "2026-01-05T09:05:00.000Z", [LEA, "Ancien Alias <Old.Alias@acme.example>"]))
    sqs.send_message(QueueUrl=queue, MessageBody=permanent)
    report = _drain(world, sqs, queue, tmp_path)
    assert (report.stored, report.suppressed, report.set_aside) == (1, 2, 0), report.reasons
    with Session(world.engine) as session:
        alias = session.get(Suppression, "old.alias@acme.example")  # not a lead: on the list all the same
    assert (alias.reason, alias.source) == ("bounced", "ses:email_bounced")
    sqs.send_message(QueueUrl=queue, MessageBody=permanent)  # SQS delivers at least once
    report = _drain(world, sqs, queue, tmp_path)
    assert (report.stored, report.duplicates, report.suppressed) == (0, 1, 0)
    assert_suppressed_everywhere(world, reason="bounced", source="ses:email_bounced")


def test_an_ses_complaint_suppresses_at_once(world, sqs, queue, tmp_path):
    sqs.send_message(QueueUrl=queue, MessageBody=_sns(_ses_complaint("2026-01-05T09:06:00.000Z")))
    report = _drain(world, sqs, queue, tmp_path)
    assert (report.stored, report.suppressed, report.set_aside) == (1, 1, 0), report.reasons
    assert_suppressed_everywhere(world, reason="complained", source="ses:email_complained")


# --------------------------------------------------------------------------- a suppression list imported


def _numbers(output: str) -> list[int]:
    """The figures of the summary table's one row."""
    [row] = [line for line in output.splitlines() if re.fullmatch(r"[\W\d]*\d[\W\d]*", line)]
    return [int(n) for n in re.findall(r"\d+", row)]


def test_an_imported_list_suppresses_leads_and_addresses_not_yet_leads(env, tmp_path):
    listed = tmp_path / "do-not-mail.csv"
    listed.write_text(
        "email,reason\n"
        f"{LEA},\n"                              # 2: a lead, the default reason
        "new.prospect@initech.example,bounced\n"  # 3: not a lead yet
        "not-an-email,manual\n"                   # 4
        ",unsubscribed\n"                         # 5
        "karim@initech.example,spam\n"            # 6: kept, with the default reason
        "LEA@acme.example,manual\n",              # 7: a duplicate, the first row wins
        encoding="utf-8",
    )
    result = relance("suppress", "import", str(listed))
    assert result.exit_code == 0, result.output
    assert f"{listed}:4: email: 'not-an-email' is not an email address" in result.output
    assert f"{listed}:5: email: empty: every row needs an email address" in result.output
    assert f"{listed}:6: reason: unknown reason 'spam'" in result.output
    assert f"{listed}:7: email: lea@acme.example already on row 2" in result.output
    assert _numbers(result.output) == [3, 0, 3]  # suppressed now, already on the list, rows with problems
    assert_suppressed_everywhere(env, reason="imported", source="import:do-not-mail.csv")

    again = relance("suppress", "import", str(listed))
    assert _numbers(again.output) == [0, 3, 3]
    with Session(env.engine) as session:
        entries = {s.email: (s.reason, s.source) for s in session.exec(select(Suppression)).scalars()}
    assert entries == {LEA: ("imported", "import:do-not-mail.csv"),
                       "new.prospect@initech.example": ("bounced", "import:do-not-mail.csv"),
                       "karim@initech.example": ("imported", "import:do-not-mail.csv")}

    # the address that was not a lead comes in suppressed when a later import brings it
    leads = tmp_path / "salon.csv"
    leads.write_text("email,first_name,company\nNew.Prospect@initech.example,Nina,Initech\nfresh@globex.example,Fred,Globex\n",
                     encoding="utf-8")
    assert relance("import", str(leads), "--source", "salon", "--basis", "legitimate_interest").exit_code == 0
    shown = json.loads(relance("lead", "show", "new.prospect@initech.example", "--json").output)
    assert shown["suppressed"] == "bounced" and shown["suppression_list"]["source"] == "import:do-not-mail.csv"
    assert json.loads(relance("lead", "show", "fresh@globex.example", "--json").output)["suppressed"] is None

    # and a scenario it triggers mails the other new lead, never it
    now = env.clock.now()
    committed(env.engine, ingest_events, workspace=env.workspace, events=[IncomingEvent("downloaded", e, now, {"asset": "livre-blanc-leads"})
                                            for e in ("new.prospect@initech.example", "fresh@globex.example")], now=now)
    transport = RecordingTransport()
    run_tick_inline(env.engine, env.settings, scenario="whitepaper-nurture", now=now, workspace=env.workspace, transport=transport, templates=TemplateLibrary(env.settings.templates_dir))
    sent_to = [sent.to for sent in transport.sent]
    assert "fresh@globex.example" in sent_to
    assert "new.prospect@initech.example" not in sent_to and LEA not in sent_to


def test_a_plain_list_one_address_per_line_with_reason_and_source(env, tmp_path):
    listed = tmp_path / "unsubscribed.txt"
    listed.write_text(f"{LEA}\nlea@\n\nold@acme.example\n", encoding="utf-8")
    result = relance("suppress", "import", str(listed), "--reason", "unsubscribed", "--source", "old crm export")
    assert result.exit_code == 0, result.output
    assert f"{listed}:2: email: 'lea@' is not an email address" in result.output
    assert _numbers(result.output) == [2, 0, 1]
    assert relance("suppress", "import", str(listed), "--reason", "spam").exit_code != 0
    header_only = tmp_path / "wrong.csv"
    header_only.write_text("name,company\nLéa,ACME\n", encoding="utf-8")
    refused = relance("suppress", "import", str(header_only))
    assert refused.exit_code == 1 and f"{header_only}:1: email: no email column" in refused.output
    assert_suppressed_everywhere(env, reason="unsubscribed", source="old crm export")


def test_a_form_from_an_address_on_the_list_creates_a_lead_already_suppressed(env, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("nouveau@globex.example\n", encoding="utf-8")
    assert relance("suppress", "import", str(listed)).exit_code == 0
    response = _post(env, {"type": "form_submitted", "email": "nouveau@globex.example", "properties": {"first_name": "Hugo"}})
    assert response.status_code == 200
    with Session(env.engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == "nouveau@globex.example")).scalars().one()
    assert lead.suppressed == "imported"
