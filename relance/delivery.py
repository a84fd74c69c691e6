"""Delivery: send the outbox rows a batch wrote, and what is still pending from before (leftovers).

One message at a time, so that a crash strands at most the one in flight (`relance.settling` writes each
outcome). A retryable failure leaves its messages pending and raises `RetryableDelivery` with what was done;
messages to leads pending too long expire instead of leaving late.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, and_, func, or_, select, update
from sqlmodel import Session

from relance import webhooks
from relance.composing import LEAD_READ, OUTBOX_READ, compose
from relance.consent import refusal
from relance.email.templates import TemplateLibrary
from relance.email.transports import Transport, make_transport
from relance.gate import check, held_values, policed, ready
from relance.outbox import REQUEUED, is_staff_mail, mark_cut_off, requeued_since
from relance.policy import SendingPolicy
from relance.settings import Settings
from relance.settling import CLAIM, Alerts, DeliveryResult, failed_calls, outcome_of, settle, why
from relance.store.tables import Lead, Outbox
from relance.suppression import held_by_preferences

UNANSWERED_IN_A_ROW = 3  # a hanging transport costs its timeout per message: after this many, the rest waits


class RetryableDelivery(RuntimeError):
    """Some messages could not be delivered for a reason a retry may fix (throttling, timeouts)."""

    def __init__(self, message: str, result: DeliveryResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def deliver(
    engine: Engine,
    settings: Settings,
    *,
    outbox_ids: list[int],
    now: datetime,
    templates: TemplateLibrary,
    manager: str | None,
    policy: SendingPolicy,
    transport: Transport | None = None,
    tally: DeliveryResult | None = None,
) -> DeliveryResult:
    """Render and send pending outbox rows, one at a time, so that a crash strands at most the one in flight.

    Each row is marked `sending` (only if still `pending`: a cancelled or already taken row is left
    alone) and committed before it is handed to the transport; its outcome is written in the same
    commit that marks the next one. Outcomes: sent; pending again when the transport proves it did
    not leave and a retry may help; failed (refused, or this row's own data cannot make an email);
    unknown (handed over, no answer: never resent without an operator's decision). Staff mail that fails for good
    alerts `manager` (scoring.yaml `sales.manager`, from the caller's workspace). A marketing email to a lead that
    `policy` (sending.yaml) holds back is not claimed: it stays pending until the hold ends, or is skipped
    (relance.gate, which counts the lead's sends under a lock on the lead).

    `tally`, the caller's, gets this call's outcomes added whatever happens: what left is counted even when the
    call then raises (a retry for the rest, an error), and a retried call adds to the same tally."""
    transport = transport or make_transport(settings)
    result = DeliveryResult()
    outbox = Outbox.__table__
    # Core, not the ORM: one commit per message is the price of exactly-once, so each costs only its statements
    with engine.connect() as connection:
        rows = sorted(connection.execute(
            select(*(outbox.c[name] for name in OUTBOX_READ)).where(outbox.c.id.in_(outbox_ids), outbox.c.status == "pending", ready(now))
        ).all(), key=lambda row: (-row.priority, row.id))  # the higher priority first
        lead_columns = [Lead.__table__.c[name] for name in LEAD_READ]
        leads = {l.id: l for l in connection.execute(select(*lead_columns).where(Lead.id.in_({r.lead_id for r in rows}))).all()}
        chosen = held_by_preferences(connection, rows=rows, leads=leads, now=now)  # on the unsubscribe page
        settled: list[tuple[int, str, dict[str, Any]]] = []  # (id, status it must still have, new values)
        alerts = Alerts(manager, now, result)
        client: httpx.Client | None = None
        unanswered = 0  # unknown outcomes in a row: the transport hangs, stop feeding it
        try:
            for position, row in enumerate(rows):
                if unanswered >= UNANSWERED_IN_A_ROW:
                    left = len(rows) - position
                    result.retryable += left
                    result.errors.append(f"stopped after {unanswered} sends in a row got no answer: {left} message(s) "
                                         "left pending for a retry, none of them handed over")
                    break
                lead = leads[row.lead_id]
                kind = row.kind
                if kind == "lead" and lead.suppressed:  # notifications about a lead still reach sales and systems
                    settled.append((row.id, "pending", {"status": "skipped", "error": f"suppressed: {lead.suppressed}"}))
                    result.skipped += 1
                    continue
                # no lawful basis (RELANCE_REQUIRE_BASIS), or a preference of the unsubscribe page: before the caps,
                refused = ((kind == "lead" and refusal(lead.fields, marketing=row.marketing, require=settings.require_basis))
                           or chosen.get(row.id))  # so an email refused counts for none
                if refused:
                    settled.append((row.id, "pending", {"status": "skipped", "error": refused}))
                    result.skipped += 1
                    continue
                if policed(row, policy):
                    settle(connection, settled, alerts.rows)
                    if (held := check(connection, row, lead, policy=policy, now=now)) is not None:
                        values = held_values(row, held, policy=policy)
                        settled.append((row.id, "pending", values))
                        settle(connection, settled, alerts.rows)
                        connection.commit()
                        result.note_hold(held.reason, skipped=values.get("status") == "skipped")
                        continue
                try:
                    if kind == "webhook":
                        client = client or webhooks.client()  # direct: a proxy would bypass the destination check
                        body = webhooks.payload(lead=lead, scenario=row.scenario, step_id=row.step_id, at=now)
                        send = lambda: webhooks.post(client, row.to_address, body, secret=settings.secret_key, outbox_id=row.id,
                                                     allow=settings.webhook_allow)
                        subject = row.subject
                    else:
                        email = compose(row, lead, settings=settings, templates=templates)
                        send, subject = (lambda: transport.send(email)), email.subject
                except Exception as exc:  # noqa: BLE001 - this row's data cannot make a message; the others go on
                    settled.append((row.id, "pending", {"status": "failed", "error": f"cannot be built: {why(exc)}"}))
                    result.failed += 1
                    result.errors.append(f"outbox {row.id} to {row.to_address!r} ({row.template or kind}): {why(exc)}")
                    alerts.note(row, settled[-1][2])
                    continue
                settle(connection, settled, alerts.rows)
                taken = connection.execute(CLAIM, {"_id": row.id, "_at": now}).rowcount
                connection.commit()
                if taken:  # else cancelled (suppressed) or sent by another run since we read it
                    before = result.unknown
                    settled.append((row.id, "sending", outcome_of(send, subject, now, result, row)))
                    unanswered = unanswered + 1 if result.unknown > before else 0
                    alerts.note(row, settled[-1][2])
        finally:  # what is settled is written; a row whose send was interrupted stays `sending` (cut off mid-send)
            if client is not None:
                client.close()
            settle(connection, settled, alerts.rows)
            connection.commit()
            if tally is not None:
                tally.add_attempt(result)
    if result.retryable:
        raise RetryableDelivery(f"{result.retryable} message(s) could not be delivered yet: {failed_calls(result.errors)}", result)
    return result


PENDING_MAX_AGE = timedelta(hours=48)  # the SLA deadline: later than that, a message to a lead has lost its point


def expire_pending(engine: Engine, *, now: datetime) -> int:
    """Fail the messages to leads and the webhooks still pending PENDING_MAX_AGE after they were written (or put
    back by an operator); how many. Staff mail never expires: it is retried until it leaves or fails for good."""
    cutoff, hours = now - PENDING_MAX_AGE, f"{PENDING_MAX_AGE.total_seconds() / 3600:g} h"
    with Session(engine) as session:
        old = session.execute(select(Outbox.id, Outbox.kind, Outbox.options, Outbox.hold_until).where(  # held: from its hold's end
            Outbox.status == "pending", func.coalesce(Outbox.hold_until, Outbox.created_at) < cutoff)).all()
        written, put_back, held = [], [], []
        for row in old:
            if not is_staff_mail(row.kind) and not requeued_since(row.options, cutoff):
                (put_back if (row.options or {}).get(REQUEUED) else held if row.hold_until else written).append(row.id)
        expired = 0
        for error, ids in ((f"expired: still pending {hours} after it was written", written),
                           (f"expired: still pending {hours} after an operator put it back", put_back),
                           (f"expired: still pending {hours} after sending.yaml stopped holding it back", held)):
            for start in range(0, len(ids), 500):
                expired += session.execute(update(Outbox).where(Outbox.id.in_(ids[start:start + 500]), Outbox.status == "pending")
                                           .values(status="failed", error=error)).rowcount
        session.commit()
    return expired


def deliver_pending(
    engine: Engine, settings: Settings, *, now: datetime, templates: TemplateLibrary, manager: str | None,
    policy: SendingPolicy, transport: Transport | None = None, batch_size: int | None = None,
) -> DeliveryResult:
    """Deliver every outbox row still pending from before `now`: a batch whose retries ran out, a crash
    between writing and sending, a hand-off or SLA email written by ingestion or housekeeping.
    Messages to leads pending for longer than PENDING_MAX_AGE expire (failed, with the reason) instead of leaving
    late (staff mail does not: see expire_pending); rows an earlier run left `sending` (it died mid-send) become `unknown` and are named in `cut_off`.
    Rows the sending policy held back go once their hold ends, the highest priority first (then the oldest)."""
    transport = transport or make_transport(settings)
    total = DeliveryResult(cut_off=mark_cut_off(engine, now=now))
    total.failed += expire_pending(engine, now=now)
    last = (101, 0)  # (priority, id) of the last row taken: pages in priority order, then id
    while True:
        with Session(engine) as session:
            page = session.execute(
                select(Outbox.priority, Outbox.id).where(
                    Outbox.status == "pending", Outbox.created_at <= now, ready(now),
                    or_(Outbox.priority < last[0], and_(Outbox.priority == last[0], Outbox.id > last[1])))
                .order_by(Outbox.priority.desc(), Outbox.id).limit(batch_size or settings.batch_size)
            ).all()
        if not page:
            return total
        last = tuple(page[-1])
        ids = [row.id for row in page]
        try:
            done = deliver(engine, settings, outbox_ids=ids, now=now, transport=transport, templates=templates, manager=manager,
                           policy=policy)
        except RetryableDelivery as exc:  # left pending: the next run tries again
            done = exc.result or DeliveryResult()
        total.merge(done)
