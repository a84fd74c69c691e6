"""Proof of consent: what a form says the person accepted (or withdrew), kept on the lead with every record before it.

An event carries consent in its `consent_*` properties (`POST /events` turns its `consent` object into them):
`consent_source` (the form or page), `consent_wording` (the exact text), `consent_at` (ISO; default: the event's
time), `consent_granted` (default true; false, no or withdrawn for a withdrawal), and any other `consent_*` kept
as given. Each becomes one record; `lead.fields["consent"]` is the newest record (by its time) and
`lead.fields["consent_history"]` every record, oldest first.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from relance.clock import ensure_utc, parse_instant

PREFIX = "consent_"
_GRANTED = {"true": True, "yes": True, "1": True, "granted": True, "false": False, "no": False, "0": False,
            "withdrawn": False}


class BadConsent(ValueError):
    """A consent property that cannot be read; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def record_of(event_type: str, properties: dict[str, Any], *, occurred_at: datetime, channel: str) -> dict[str, Any] | None:
    """The consent record an event's properties carry, or None when they carry none."""
    given = {k[len(PREFIX):]: v for k, v in properties.items() if k.startswith(PREFIX)}
    if not given:
        return None
    granted = given.pop("granted", True)
    if not isinstance(granted, bool):
        if str(granted).strip().lower() not in _GRANTED:
            raise BadConsent("consent_granted", f"consent_granted must be true or false (or withdrawn), got {granted!r}")
        granted = _GRANTED[str(granted).strip().lower()]
    at = given.pop("at", None)
    try:
        when = parse_instant(str(at)) if at not in (None, "") else ensure_utc(occurred_at)
    except ValueError as exc:
        raise BadConsent("consent_at", f"consent_at: {exc}") from None
    form = properties.get("form")
    record = {"granted": granted, "source": str(given.pop("source", "") or form or f"{channel}:{event_type}"),
              "wording": str(given.pop("wording", "")), "at": when.isoformat(), "event": event_type, "channel": channel}
    if form:
        record["form"] = str(form)
    return {**record, **given}


def _when(record: dict[str, Any]) -> datetime:
    try:
        return parse_instant(str(record.get("at")))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)  # an unreadable time sorts first


def merged(fields: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The lead's fields with this record added to its consent history (kept in time order, newest last)."""
    history = [dict(r) for r in fields.get("consent_history") or []]
    if not history and isinstance(fields.get("consent"), dict):  # consent kept before there was a history
        history = [{"granted": True, **fields["consent"]}]
    history = sorted([*history, record], key=_when)  # stable: records of one instant stay in arrival order
    return {**fields, "consent": history[-1], "consent_history": history}


def consent_of(fields: dict[str, Any] | None) -> dict[str, Any]:
    """The lead's consent as people read it: state (granted, withdrawn, or none recorded), newest record, history."""
    fields = fields or {}
    history = list(fields.get("consent_history") or ([{"granted": True, **fields["consent"]}]
                                                      if isinstance(fields.get("consent"), dict) else []))
    current = history[-1] if history else None
    state = None if current is None else ("granted" if current.get("granted", True) else "withdrawn")
    return {"state": state, "current": current, "history": history}
