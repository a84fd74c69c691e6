"""Proof of consent: what a form says the person accepted (or withdrew), kept on the lead with every record before it.

An event carries consent in its `consent_*` properties (`POST /events` turns its `consent` object into them):
`consent_source` (the form or page), `consent_wording` (the exact text), `consent_at` (ISO; default: the event's
time), `consent_granted` (default true; false, no or withdrawn for a withdrawal), and any other `consent_*` kept
as given. Each becomes one record; `lead.fields["consent"]` is the newest record (by its time) and
`lead.fields["consent_history"]` every record, oldest first.

The lead's lawful basis is kept here too (`lead.fields["basis"]`, see "lawful basis" below): consent granted, or a
legitimate interest for a professional contact; a marketing email to a lead with neither is refused at send time.
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
    return _with_consent_basis({**fields, "consent": history[-1], "consent_history": history})


def consent_of(fields: dict[str, Any] | None) -> dict[str, Any]:
    """The lead's consent as people read it: state (granted, withdrawn, or none recorded), newest record, history."""
    fields = fields or {}
    history = list(fields.get("consent_history") or ([{"granted": True, **fields["consent"]}]
                                                      if isinstance(fields.get("consent"), dict) else []))
    current = history[-1] if history else None
    state = None if current is None else ("granted" if current.get("granted", True) else "withdrawn")
    return {"state": state, "current": current, "history": history}


# --------------------------------------------------------------------------- lawful basis
#
# On what basis a lead may be mailed (GDPR art. 6): `consent` (the person accepted, with the source, the wording and
# the time: a consent record above) or `legitimate_interest` (a professional contact, B2B, with its source: a trade
# show, a business card, a CRM). Kept in `lead.fields["basis"]`: {"basis", "source", "at", "channel", "wording"?}.
# Rules: a consent granted sets the basis `consent` (it replaces a legitimate interest: it is the stronger proof);
# a withdrawal removes the basis (the address is suppressed too); a legitimate interest never replaces a basis already
# recorded (the first one stays, as the lead's source does), nor follows a withdrawal. Nothing invents a basis: a lead that came in without one
# has none, and its marketing emails are refused at send time (`refusal`, RELANCE_REQUIRE_BASIS).

BASES = ("consent", "legitimate_interest")
REQUIRE_BASIS = ("marketing", "never")  # RELANCE_REQUIRE_BASIS: refuse marketing email to a lead without a basis, or not
BASIS_PROPERTIES = ("basis", "basis_source")  # an event's properties that record a legitimate interest


class BadBasis(BadConsent):
    """A lawful basis that cannot be recorded; `field` names the property, column or option."""


def checked_basis(value: object, *, field: str = "basis") -> str:
    """`consent` or `legitimate_interest` (case, spaces and dashes forgiven: `Legitimate interest`); BadBasis else."""
    key = "_".join(str(value or "").strip().lower().replace("-", " ").replace("_", " ").split())
    if key not in BASES:
        raise BadBasis(field, f"{str(value)!r} is not a lawful basis: use consent or legitimate_interest")
    return key


def interest_record(*, source: object, at: datetime, channel: str, field: str = "basis_source") -> dict[str, Any]:
    """A legitimate interest as kept in `fields["basis"]`; its source (where the professional contact came from) is
    required."""
    source = str(source or "").strip()
    if not source:
        raise BadBasis(field, f"a legitimate interest needs its source (the trade show, the business card, the "
                              "CRM the professional contact came from)")
    return {"basis": "legitimate_interest", "source": source, "at": ensure_utc(at).isoformat(), "channel": channel}


def interest_of_event(event_type: str, properties: dict[str, Any], *, occurred_at: datetime,
                      channel: str) -> dict[str, Any] | None:
    """The legitimate interest an event's `basis` / `basis_source` properties record, or None. `basis=consent` is
    recorded from the consent itself (its `consent_*` properties, the API's `consent` object): alone it is refused."""
    if properties.get("basis") in (None, ""):
        if properties.get("basis_source") not in (None, ""):
            raise BadBasis("basis", "basis_source is given without basis: add basis=legitimate_interest")
        return None
    try:
        basis = checked_basis(properties["basis"])
    except BadBasis as exc:
        raise BadBasis("basis", f"basis: {exc}") from None
    if basis == "consent":
        if not any(k.startswith(PREFIX) for k in properties):
            raise BadBasis("basis", "basis consent is recorded from the consent itself: give consent_source and "
                                    "consent_wording (the API's consent object) instead")
        return None  # the consent record sets it (record_of)
    return interest_record(source=properties.get("basis_source") or properties.get("form") or f"{channel}:{event_type}",
                           at=occurred_at, channel=channel)


def basis_of(fields: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lead's lawful basis, or None. A lead whose consent was granted before the basis was kept has it from its
    consent record; a withdrawn consent leaves none."""
    fields = fields or {}
    basis = fields.get("basis")
    if isinstance(basis, dict) and basis.get("basis") in BASES:
        return basis
    current = consent_of(fields)["current"]
    return _consent_basis(current) if current is not None and current.get("granted", True) else None


def _consent_basis(record: dict[str, Any]) -> dict[str, Any]:
    return {"basis": "consent", **{k: record[k] for k in ("source", "wording", "at", "channel") if record.get(k) is not None}}


def with_interest(fields: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The lead's fields with this legitimate interest as its basis, unless it has a basis already (kept) or withdrew
    its consent (an objection: a legitimate interest does not outweigh it)."""
    if basis_of(fields) is not None or consent_of(fields)["state"] == "withdrawn":
        return fields
    return {**fields, "basis": record}


def _with_consent_basis(fields: dict[str, Any]) -> dict[str, Any]:
    """After a consent record: granted, the basis is that consent; withdrawn, there is none."""
    current = fields["consent"]
    rest = {k: v for k, v in fields.items() if k != "basis"}
    return {**rest, "basis": _consent_basis(current)} if current.get("granted", True) else rest


def refusal(fields: dict[str, Any] | None, *, marketing: bool, require: str) -> str | None:
    """Why a marketing email to this lead must not leave for want of a lawful basis, or None (it may go).
    `require` is RELANCE_REQUIRE_BASIS; transactional email (`marketing` false) is never refused here."""
    if require == "never" or not marketing or basis_of(fields) is not None:
        return None
    current = consent_of(fields)["current"]
    if current is not None:  # withdrawn (such a lead is suppressed too)
        return f"no lawful basis: consent withdrawn ({current.get('source') or '?'}, {current.get('at')})"
    return ("no lawful basis: neither consent nor legitimate interest is recorded for this lead (import it with --basis, "
            "or record its consent with a form)")
