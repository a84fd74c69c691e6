"""SES events through a real (moto) SQS queue into the store, on both backends."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from relance.clock import ensure_utc
from relance.plans import sync_scenarios
from relance.scoring.config import ScoringConfig
from relance.ses_events import drain
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Enrollment, Event, Lead, Outbox
from relance.workspace import Workspace, load_workspace
from tests.units import committed
from tests.basis import professional


def ses(kind: str, message_id: str, at: str, **detail) -> dict:
    body = {"eventType": kind, "mail": {"messageId": message_id, "timestamp": "2026-01-05T09:00:00.000Z",
                                         "destination": ["lea@acme.example"], "tags": {}}}
    body[kind.lower()] = {"timestamp": at, **detail}
    return body


def sns(event: dict) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:eu-west-1:1:ses",
                       "Message": json.dumps(event)})


@pytest.fixture
def queue(sqs, request):
    url = sqs.create_queue(QueueName=f"ses-{request.node.name[-40:].replace('[', '-').replace(']', '')}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def lead(engine, clock):
    with Session(engine) as session:
        lead = upsert_lead(session, email="lea@acme.example", now=clock.now(), fields=professional())
        session.add(Outbox(lead_id=lead.id, scenario="nurture", step_id="send-guide", template="t", to_address=lead.email,
                           status="sent", message_id="ses-msg-1", created_at=clock.now(), options={}))
        session.commit()
        return lead.id


LIBRARY = Workspace(scoring=ScoringConfig.model_validate({"behaviour": {"email_opened": 1, "email_clicked": 3}}))


def _drain(engine, sqs, queue, clock, tmp_path):
    return committed(engine, drain, workspace=LIBRARY, sqs=sqs, queue_url=queue, clock=clock, set_aside_dir=tmp_path / "aside", wait_seconds=0)


def _lead(engine):
    with Session(engine) as session:
        return session.exec(select(Lead)).scalars().one()


def test_events_are_matched_to_the_outbox_and_stored_once_even_out_of_order_and_twice(engine, sqs, queue, lead, clock, tmp_path):
    messages = [
        sns(ses("Open", "ses-msg-1", "2026-01-05T10:00:00Z")),          # before its Send
        json.dumps(ses("Send", "ses-msg-1", "2026-01-05T09:00:01Z")),    # a raw SES event
        sns(ses("Click", "ses-msg-1", "2026-01-05T10:01:00Z", link="https://relance.example/etude")),
        sns(ses("Click", "ses-msg-1", "2026-01-05T10:01:00Z", link="https://relance.example/etude")),  # redelivered
    ]
    for body in messages:
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    report = _drain(engine, sqs, queue, clock, tmp_path)
    assert (report.stored, report.duplicates, report.deleted, report.set_aside) == (3, 1, 4, 0)
    with Session(engine) as session:
        events = {e.type: e for e in session.exec(select(Event)).scalars()}
    assert set(events) == {"email_opened", "email_sent", "email_clicked"}
    assert events["email_opened"].properties["step_id"] == "send-guide" and events["email_opened"].properties["scenario"] == "nurture"
    assert events["email_clicked"].properties["link"] == "https://relance.example/etude"
    assert _lead(engine).score == 4
    assert sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages") is None


def test_a_transient_bounce_keeps_the_address_and_a_permanent_one_suppresses_it(engine, sqs, queue, lead, clock, tmp_path):
    sqs.send_message(QueueUrl=queue, MessageBody=sns(ses("Bounce", "ses-msg-1", "2026-01-05T09:05:00Z", bounceType="Transient",
                                                         bouncedRecipients=[{"emailAddress": "lea@acme.example"}])))
    _drain(engine, sqs, queue, clock, tmp_path)
    assert _lead(engine).suppressed is None
    sqs.send_message(QueueUrl=queue, MessageBody=sns(ses("Bounce", "ses-msg-1", "2026-01-05T09:06:00Z", bounceType="Permanent",
                                                         bouncedRecipients=[{"emailAddress": "lea@acme.example"}])))
    assert _drain(engine, sqs, queue, clock, tmp_path).suppressed == 1
    assert _lead(engine).suppressed == "bounced"


def test_a_complaint_suppresses_the_address_at_once(engine, sqs, queue, lead, clock, tmp_path):
    sqs.send_message(QueueUrl=queue, MessageBody=sns(ses("Complaint", "ses-msg-1", "2026-01-05T09:06:00Z",
                                                         complainedRecipients=[{"emailAddress": "lea@acme.example"}])))
    _drain(engine, sqs, queue, clock, tmp_path)
    assert _lead(engine).suppressed == "complained"


def test_malformed_messages_are_set_aside_with_their_reason_and_do_not_block_the_queue(engine, sqs, queue, lead, clock, tmp_path):
    for body in ("{not json", json.dumps({"eventType": "Reject", "mail": {}}), sns(ses("Open", "x", "2026-01-05T10:00:00Z")).replace("lea@", "ghost@"),
                 sns(ses("Open", "ses-msg-1", "2026-01-05T10:00:00Z"))):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    report = _drain(engine, sqs, queue, clock, tmp_path)
    assert (report.set_aside, report.stored, report.deleted) == (3, 1, 4)
    kept = [json.loads(p.read_text()) for p in (tmp_path / "aside").glob("*.json")]
    reasons = sorted(k["reason"] for k in kept)
    assert any(r.startswith("not JSON") for r in reasons) and any("Reject" in r for r in reasons)
    assert any("ghost@acme.example" in r for r in reasons)
    assert all(k["body"] for k in kept)
    assert sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages") is None


def test_events_relance_would_refuse_from_any_door_are_set_aside_with_the_field_named(engine, sqs, queue, lead, clock, tmp_path):
    bad_address = ses("Open", "ses-msg-9", "2026-01-05T10:00:00Z")
    bad_address["mail"]["destination"] = ["lea\x00@acme.example"]
    bounce = ses("Bounce", "ses-msg-1", "2026-01-05T10:00:00Z", bounceType="Permanent",
                 bouncedRecipients=[{"emailAddress": "lea@acme.example"}, {"emailAddress": "x\x00@evil.example"}])
    for event in (ses("Open", "ses-msg-1", "9999-12-31T23:00:00-05:00"), ses("Open", "ses-msg-1", "2099-01-01T00:00:00Z"),
                  bad_address, bounce):
        sqs.send_message(QueueUrl=queue, MessageBody=sns(event))
    report = _drain(engine, sqs, queue, clock, tmp_path)

    assert (report.set_aside, report.stored, report.deleted) == (3, 1, 4)
    reasons = sorted(json.loads(p.read_text())["reason"] for p in (tmp_path / "aside").glob("*.json"))
    assert any(r.startswith("bad timestamp '9999-12-31T23:00:00-05:00'") for r in reasons), reasons
    assert any(r.startswith("occurred_at: 2099-01-01T00:00:00+00:00 is in the future") for r in reasons), reasons
    assert any(r.startswith("email: 'lea\\x00@acme.example' is not an email address") for r in reasons), reasons
    assert _lead(engine).suppressed == "bounced"  # the bounce's bad second address is left out, the lead's is kept
    with Session(engine) as session:
        assert [e.type for e in session.exec(select(Event)).scalars()] == ["email_bounced"]


def test_a_dead_letter_queue_receives_what_is_set_aside(engine, sqs, queue, lead, clock, tmp_path):
    dead = sqs.create_queue(QueueName="ses-dead-letter")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="{not json")
    committed(engine, drain, workspace=LIBRARY, sqs=sqs, queue_url=queue, clock=clock, dead_letter_url=dead, wait_seconds=0)
    [kept] = sqs.receive_message(QueueUrl=dead, MessageAttributeNames=["All"], WaitTimeSeconds=0)["Messages"]
    assert kept["Body"] == "{not json" and kept["MessageAttributes"]["reason"]["StringValue"].startswith("not JSON")
    sqs.delete_queue(QueueUrl=dead)


class LongPolls:
    """The real SQS client of a drain that runs for days: before each poll after the first, the clock moves on a
    day and the next message of `later` arrives."""

    def __init__(self, sqs, queue: str, clock, later: list[str]) -> None:
        self.sqs, self.queue, self.clock, self.later, self.polls = sqs, queue, clock, later, 0

    def receive_message(self, **arguments):
        if self.polls and self.later:
            self.clock.advance(timedelta(days=1))
            self.sqs.send_message(QueueUrl=self.queue, MessageBody=self.later.pop(0))
        self.polls += 1
        return self.sqs.receive_message(**arguments)

    def __getattr__(self, name):
        return getattr(self.sqs, name)


FOLLOW = """\
scenario: clicked-follow
trigger: {event: email_clicked}
steps:
  - id: pause
    wait: 3d
"""


def test_a_drain_that_runs_for_days_stores_each_message_at_the_time_it_is_handled(engine, db_url, sqs, queue, lead, clock, tmp_path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "follow.yaml").write_text(FOLLOW, encoding="utf-8")
    settings = Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    started = clock.now()
    sqs.send_message(QueueUrl=queue, MessageBody=sns(ses("Open", "ses-msg-1", "2026-01-05T09:30:00Z")))
    later = [sns(ses("Click", "ses-msg-1", "2026-01-06T09:30:00Z", link="https://relance.example/etude")),
             sns(ses("Delivery", "ses-msg-1", "2026-01-07T09:30:00Z"))]

    report = committed(engine, drain, workspace=workspace, sqs=LongPolls(sqs, queue, clock, later), queue_url=queue, clock=clock, set_aside_dir=tmp_path / "aside", wait_seconds=0)

    assert (report.stored, report.deleted) == (3, 3)
    with Session(engine) as session:
        received = {e.type: e.received_at for e in session.exec(select(Event)).scalars()}
        [enrollment] = session.exec(select(Enrollment)).scalars().all()
    assert {t: ensure_utc(at) for t, at in received.items()} == {
        "email_opened": started, "email_clicked": started + timedelta(days=1), "email_delivered": started + timedelta(days=2)}
    assert ensure_utc(enrollment.entered_at) == started + timedelta(days=1)  # entered when the click was handled, not at start-up


def test_ses_clicks_of_a_scanner_or_seconds_after_sending_are_machine_clicks(engine, sqs, queue, lead, clock, tmp_path):
    with Session(engine) as session:
        row = session.exec(select(Outbox)).scalars().one()
        row.sent_at = ensure_utc(datetime.fromisoformat("2026-01-05T09:00:00"))
        session.commit()
    browser = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15"
    for at, link, agent in (("2026-01-05T09:00:04Z", "https://relance.example/etude", browser),      # 4 s after sending
                            ("2026-01-05T10:00:00Z", "https://relance.example/etude", "Barracuda Sentinel (EE)"),
                            ("2026-01-05T11:00:00Z", "https://relance.example/etude", browser)):  # the lead
        sqs.send_message(QueueUrl=queue, MessageBody=sns(ses("Click", "ses-msg-1", at, link=link, userAgent=agent)))
    assert _drain(engine, sqs, queue, clock, tmp_path).stored == 3
    with Session(engine) as session:
        events = session.exec(select(Event).order_by(Event.occurred_at)).scalars().all()
    assert [(e.type, e.properties.get("machine")) for e in events] == [
        ("email_clicked_by_machine", "clicked 4 s after the email was sent"),
        ("email_clicked_by_machine", "user agent of a scanner (barracuda)"),
        ("email_clicked", None)]
    assert _lead(engine).score == 3
