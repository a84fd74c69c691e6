"""SES event notifications (SNS -> SQS) in: matched to the outbox, stored once, bounces suppress.

A permanent bounce or a complaint is ingested like any other event (channel `ses`), which
suppresses its lead (relance.suppression); the other recipients it names are suppressed too,
leads or not.

A message is deleted from the queue only after its event is committed. A message that cannot
be understood is set aside (dead-letter queue, else a JSON file with its reason), then deleted,
so it is never lost and never blocks the queue.

The drain may run for days: each message is stored at the clock's time when it is handled.
A queue that cannot be reached is a SettingError saying which settings to check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select
from sqlmodel import Session

from relance.clock import Clock, parse_instant
from relance.engagement import machine_request
from relance.ingest import BadEvent, IncomingEvent, UnknownLead, ingest_events
from relance.inputs import checked_email
from relance.scenario.model import MACHINE_CLICK
from relance.settings import MACHINE_CLICK_SECONDS, SettingError
from relance.store.repo import normalise_email
from relance.store.tables import Lead, Outbox
from relance.suppression import suppress_for_event
from relance.workspace import Workspace

EVENT_TYPES = {
    "Send": "email_sent", "Delivery": "email_delivered", "Open": "email_opened", "Click": "email_clicked",
    "Bounce": "email_bounced", "Complaint": "email_complained",
}
_DETAIL = {"Send": "send", "Delivery": "delivery", "Open": "open", "Click": "click", "Bounce": "bounce", "Complaint": "complaint"}


class BadMessage(ValueError):
    """An SQS message that is not an SES event relance understands; the message says why."""


@dataclass(frozen=True)
class SesEvent:
    kind: str  # Send, Delivery, Open, Click, Bounce, Complaint
    message_id: str
    destination: str
    occurred_at: datetime
    detail: dict[str, Any]

    @property
    def permanent_bounce(self) -> bool:
        return self.kind == "Bounce" and self.detail.get("bounceType") == "Permanent"


def parse_ses_message(body: str) -> SesEvent:
    """An SQS body: an SNS envelope whose `Message` is a JSON string, or the raw SES event."""
    try:
        document = json.loads(body)
        if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
            document = json.loads(document["Message"])
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadMessage("not a JSON object")
    kind = document.get("eventType") or document.get("notificationType")
    if kind not in EVENT_TYPES:
        raise BadMessage(f"unknown SES event type {kind!r}")
    mail = document.get("mail") or {}
    message_id, destinations = mail.get("messageId"), mail.get("destination") or []
    if not message_id or not destinations:
        raise BadMessage("no mail.messageId or mail.destination")
    detail = document.get(_DETAIL[kind]) or {}
    when = detail.get("timestamp") or mail.get("timestamp")
    try:
        occurred_at = parse_instant(str(when))
    except ValueError:
        raise BadMessage(f"bad timestamp {when!r}") from None
    return SesEvent(kind, message_id, str(destinations[0]), occurred_at, detail)


@dataclass
class DrainReport:
    stored: int = 0
    duplicates: int = 0
    suppressed: int = 0
    set_aside: int = 0
    deleted: int = 0
    reasons: list[str] = field(default_factory=list)
    due: dict[str, int] = field(default_factory=dict)  # enrollments the stored events made due now, by scenario


def _incoming(session: Session, event: SesEvent) -> tuple[IncomingEvent, list[str]]:
    """The relance event of an SES event, with the outbox row's scenario and step when it is ours."""
    row = session.exec(select(Outbox).where(Outbox.message_id == event.message_id)).scalars().first()
    properties: dict[str, Any] = {"ses_message_id": event.message_id}
    email = event.destination
    if row is not None:
        lead = session.get(Lead, row.lead_id)
        email = lead.email if lead else email
        properties.update(scenario=row.scenario, step_id=row.step_id, enrollment_id=row.enrollment_id, outbox_id=row.id)
    recipients: list[str] = []  # the addresses a permanent bounce or a complaint names
    if event.kind == "Click":
        properties["link"] = event.detail.get("link", "")
    if event.kind == "Bounce":
        properties["bounce_type"] = "permanent" if event.permanent_bounce else "transient"
        if event.permanent_bounce:
            recipients = _addresses(event.detail.get("bouncedRecipients"), email)
    if event.kind == "Complaint":
        recipients = _addresses(event.detail.get("complainedRecipients"), email)
    key = f"ses:{event.message_id}:{event.kind}:{event.occurred_at.isoformat()}:{email}"
    type_ = EVENT_TYPES[event.kind]
    if event.kind == "Click":
        key += f":{properties['link']}"
        # SES names the clicker's agent: a scanner's click is a machine's (relance.engagement)
        if "userAgent" in event.detail and (machine := machine_request("GET", str(event.detail["userAgent"] or ""))):
            type_, properties["machine"] = MACHINE_CLICK, machine
    return IncomingEvent(type_, email, event.occurred_at, properties, key), recipients


def _addresses(recipients: Any, default: str) -> list[str]:
    """The bare, lower-case addresses of SES's bounced/complained recipients (the destination if it lists none);
    what is no email address (relance.inputs) is left out: it cannot be mailed anyway."""
    found = [parseaddr(str(r.get("emailAddress") or default))[1] or default
             for r in (recipients if isinstance(recipients, list) else []) if isinstance(r, dict)]
    return [a for a in dict.fromkeys(normalise_email(a) for a in found or [default]) if _is_email(a)]


def _is_email(text: str) -> bool:
    try:
        checked_email(text)
    except ValueError:
        return False
    return True


def handle(session: Session, *, workspace: Workspace, body: str, now: datetime, report: DrainReport,
           machine_click_seconds: float = MACHINE_CLICK_SECONDS) -> None:
    """Store one SQS message body in the caller's transaction, begun for this message; raises BadMessage when it
    must be set aside.

    The event goes through ingestion (which suppresses the lead of a permanent bounce or a
    complaint); the other addresses the bounce or complaint names are suppressed here, through
    the same `suppress`, leads or not. An event that cannot come in is rolled back, and what it names is still
    suppressed: the caller commits either way before the message leaves the queue."""
    event = parse_ses_message(body)
    incoming, recipients = _incoming(session, event)
    try:
        result = ingest_events(session, workspace=workspace, events=[incoming], now=now, channel="ses",
                               machine_click_seconds=machine_click_seconds)
    except BadEvent as exc:  # checked as every event is (relance.inputs): e.g. a timestamp in year 9999
        session.rollback()
        report.suppressed += _suppress_recipients(session, recipients, event=incoming, now=now)
        raise BadMessage(f"{exc.field}: {exc}") from None
    except UnknownLead as exc:
        # no lead to store the event against, but an address that bounced or complained is never mailed
        session.rollback()
        report.suppressed += _suppress_recipients(session, recipients, event=incoming, now=now)
        raise BadMessage(str(exc)) from None
    report.stored += result.stored
    report.duplicates += result.duplicates
    report.suppressed += result.suppressed
    for scenario, count in result.due.items():
        report.due[scenario] = report.due.get(scenario, 0) + count
    others = [a for a in recipients if a != normalise_email(incoming.email)]  # the lead's own: ingestion did it
    report.suppressed += _suppress_recipients(session, others, event=incoming, now=now)


def _suppress_recipients(session: Session, addresses: list[str], *, event: IncomingEvent, now: datetime) -> int:
    """Suppress these addresses as ingestion suppresses the event's lead (its reason, source `ses:<type>`); how many
    were new."""
    return sum(suppress_for_event(session, email=a, event_type=event.type, properties=event.properties, channel="ses",
                                  now=now) for a in addresses)


def drain(
    session: Session, *, workspace: Workspace, sqs, queue_url: str, clock: Clock, once: bool = True,
    dead_letter_url: str | None = None, set_aside_dir: Path | None = None, wait_seconds: int = 1,
    machine_click_seconds: float = MACHINE_CLICK_SECONDS, announce: Callable[..., None] | None = None,
) -> DrainReport:
    """Receive, store and delete messages, 10 at a time, until the queue is empty (once) or forever;
    each message is stored at `clock`'s time when it is handled (RELANCE_MACHINE_CLICK_SECONDS: `machine_click_seconds`).

    It works in chunks, as `import_leads` does, and always commits them: each message is one transaction, committed
    before the message is deleted from the queue (so a message is never lost, and a drain running for days holds no
    lock for long). `announce` (relance.prefect_adapter.Announcer) hears of the scenarios each receive made due."""
    report = DrainReport()
    while True:
        before = dict(report.due)
        messages = _queue(sqs.receive_message, queue_url, QueueUrl=queue_url, MaxNumberOfMessages=10,
                          WaitTimeSeconds=wait_seconds).get("Messages", [])
        if not messages and once:
            return report
        for message in messages:
            try:
                handle(session, workspace=workspace, body=message["Body"], now=clock.now(), report=report,
                       machine_click_seconds=machine_click_seconds)
            except BadMessage as exc:
                _set_aside(sqs, message, str(exc), dead_letter_url=dead_letter_url, directory=set_aside_dir)
                report.set_aside += 1
                report.reasons.append(f"{message['MessageId']}: {exc}")
            session.commit()
            _queue(sqs.delete_message, queue_url, QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            report.deleted += 1
        if announce is not None and (due := {k: n - before.get(k, 0) for k, n in report.due.items() if n > before.get(k, 0)}):
            announce(due, channel="ses")


def _queue(call, queue_url: str, **arguments) -> dict[str, Any]:
    """One SQS call; SettingError naming what to check when the queue cannot be reached or used."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(**arguments)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
            raise SettingError(f"the SQS queue {queue_url} does not exist: check the queue URL (--queue-url) and "
                               "RELANCE_SES_REGION") from None
        raise SettingError(f"the SQS queue {queue_url} refused the call ({code or exc}): check the AWS credentials and "
                           "their rights on the queue, and RELANCE_SES_REGION") from None
    except BotoCoreError as exc:
        raise SettingError(f"cannot reach the SQS queue {queue_url} ({exc}): check the queue URL (--queue-url), "
                           "RELANCE_SES_ENDPOINT_URL, RELANCE_SES_REGION and the AWS credentials") from None


def _set_aside(sqs, message: dict[str, Any], reason: str, *, dead_letter_url: str | None, directory: Path | None) -> None:
    """Keep a message relance cannot use, with its reason, before it leaves the main queue."""
    if dead_letter_url:
        _queue(sqs.send_message, dead_letter_url, QueueUrl=dead_letter_url, MessageBody=message["Body"],
               MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000]}})
        return
    directory = Path(directory or "ses-set-aside")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{message['MessageId']}.json").write_text(
        json.dumps({"reason": reason, "body": message["Body"]}, ensure_ascii=False, indent=2), encoding="utf-8"
    )
