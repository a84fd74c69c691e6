"""Settling what one delivery did: each message's outcome, written back onto its outbox row, and the alerts
that staff mail failed for good sends the manager.

A row is claimed `sending` (only if still `pending`) and committed before its transport is called; its outcome
is written only onto a row still in the status it was seen in, so a cancelled or re-taken row is left alone.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, update

from relance.email.transports import DeliveryError, OutcomeUnknown
from relance.outbox import alert_for, is_staff_mail
from relance.store.tables import Outbox


@dataclass
class DeliveryResult:
    """What one delivery did: how many messages left, were skipped, failed, wait for a retry or got no answer."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retryable: int = 0
    unknown: int = 0  # handed over, no answer: it may have left; never resent without an operator's decision
    errors: list[str] = field(default_factory=list)
    cut_off: list[int] = field(default_factory=list)  # rows an earlier run left `sending`, found and made `unknown`
    deferred: int = 0  # held back by sending.yaml: they wait for the next allowed moment
    withheld: int = 0  # held back by sending.yaml and skipped (`held: skip`)
    held: Counter = field(default_factory=Counter)  # both, by rule (`cap: 1 per 1d`, `quiet day: sat`: no time zone)

    def note_hold(self, reason: str, *, skipped: bool) -> None:
        """One email the sending policy held back."""
        if skipped:
            self.withheld += 1
        else:
            self.deferred += 1
        self.held[reason.split(" (", 1)[0]] += 1  # the row keeps the lead's time zone; the figures count the rule

    def merge(self, other: "DeliveryResult") -> None:
        self.sent, self.skipped, self.failed = self.sent + other.sent, self.skipped + other.skipped, self.failed + other.failed
        self.retryable, self.unknown = self.retryable + other.retryable, self.unknown + other.unknown
        self.errors.extend(other.errors)
        self.cut_off.extend(other.cut_off)
        self.deferred, self.withheld = self.deferred + other.deferred, self.withheld + other.withheld
        self.held.update(other.held)

    def add_attempt(self, attempt: "DeliveryResult") -> None:
        """Add what one more attempt at the same messages did: its outcomes add up (a message settles once), what
        still waits for a retry is what the latest attempt left."""
        retryable = attempt.retryable
        self.merge(attempt)
        self.retryable = retryable


def failed_calls(errors: list[str]) -> str:
    """How many calls failed and why, each reason once (`SES unreachable: ... (40 calls)`), the commonest first."""
    reasons = Counter(re.sub(r"^outbox \d+ to [^:]*: ", "", error) for error in errors)
    shown = "; ".join(f"{why} ({n} call{'s' if n > 1 else ''})" for why, n in reasons.most_common(3))
    more = len(reasons) - 3
    return f"{len(errors)} call(s) failed: {shown}" + (f"; and {more} other reason(s)" if more > 0 else "")


def why(exc: BaseException) -> str:
    """An error in one line: its type and the first line of its message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def outcome_of(send, subject: str, now: datetime, result: DeliveryResult, row) -> dict[str, Any]:
    """Hand one message to its transport; the values its outbox row takes from what happened."""
    try:
        message_id = send()
    except OutcomeUnknown as exc:
        result.unknown += 1
        result.errors.append(f"outbox {row.id} to {row.to_address}: outcome unknown: {exc}")
        return {"status": "unknown", "error": f"outcome unknown (it may have left; not resent): {exc}"}
    except DeliveryError as exc:
        result.errors.append(f"outbox {row.id} to {row.to_address}: {exc}")
        if exc.retryable:
            result.retryable += 1
            return {"status": "pending", "error": str(exc)}
        result.failed += 1
        return {"status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a fault of this message (bad address, bad URL...), not of the batch
        result.failed += 1
        result.errors.append(f"outbox {row.id} to {row.to_address!r}: {why(exc)}")
        return {"status": "failed", "error": why(exc)}
    result.sent += 1
    return {"status": "sent", "subject": subject, "sent_at": now, "error": None, "message_id": message_id}


_OUTBOX = Outbox.__table__
# mark one row `sending`, only if it is still `pending` (a cancelled or already taken row is left alone)
CLAIM = (update(_OUTBOX).where(_OUTBOX.c.id == bindparam("_id"), _OUTBOX.c.status == "pending")
          .values(status="sending", attempts=_OUTBOX.c.attempts + 1, attempted_at=bindparam("_at")))
_SETTLE: dict[tuple[str, ...], Any] = {}  # one statement per set of columns an outcome writes, built once


def _settle_statement(columns: tuple[str, ...]):
    statement = _SETTLE.get(columns)
    if statement is None:
        statement = _SETTLE[columns] = (
            update(_OUTBOX).where(_OUTBOX.c.id == bindparam("_id"), _OUTBOX.c.status == bindparam("_from"))
            .values({name: bindparam(name) for name in columns}))
    return statement


def settle(connection, settled: list[tuple[int, str, dict[str, Any]]], alerts: dict[int, dict[str, Any]] | None = None) -> None:
    """Write the outcomes gathered so far, each only onto a row still in the status it was seen in; empties the list.
    A failure with an alert (`alerts`, by outbox id) is written alone, and its alert in the same commit if it took."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for outbox_id, expected, values in settled:
        alert = alerts.pop(outbox_id, None) if alerts else None
        params = {"_id": outbox_id, "_from": expected, **values}
        if alert is None:
            groups[tuple(sorted(values))].append(params)
        elif connection.execute(_settle_statement(tuple(sorted(values))), params).rowcount:
            connection.execute(insert(_OUTBOX).values(alert))
    for columns, params in groups.items():
        connection.execute(_settle_statement(columns), params[0] if len(params) == 1 else params)  # executemany costs more for one
    settled.clear()


class Alerts:
    """The alerts one delivery writes: staff mail that failed for good tells `manager` (scoring.yaml `sales.manager`,
    handed in by the caller; None or not an address: nobody, and the failure says so)."""

    def __init__(self, manager: str | None, now: datetime, result: DeliveryResult) -> None:
        self.manager = manager if manager and "@" in manager else None
        self.now, self.result = now, result
        self.rows: dict[int, dict[str, Any]] = {}  # failed outbox id -> the alert row to write with its failure

    def note(self, row, values: dict[str, Any]) -> None:
        if values.get("status") != "failed" or not is_staff_mail(row.kind) or row.options.get("alert_for"):
            return
        alert = alert_for(row, manager=self.manager, why=values.get("error") or "", now=self.now)
        if alert is None:
            self.result.errors.append(f"outbox {row.id} to {row.to_address} failed and nobody was alerted: "
                                      "set sales.manager in scoring.yaml to be told")
        else:
            self.rows[row.id] = alert

