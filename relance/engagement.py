"""Opens and clicks: which earn points, and which clicks are a machine's (a mail scanner's) rather than the lead's.

Mail-security scanners (Microsoft Safe Links, Mimecast, Barracuda, Proofpoint...) follow every link of every
message within seconds of its delivery, often with a HEAD request first, and a link can be replayed at will. So:

- only the first open of each email earns points, and only the first human click of each link of each email
  (the email is its outbox row, else its scenario step); replays are stored, so the history stays true, and earn
  nothing;
- a machine click is stored as `email_clicked_by_machine` with the reason in its `machine` property: it earns
  nothing, starts and wakes nothing, makes no `clicked:` true and no report counts it. A click is a machine's when
  its request is a HEAD, has no User-Agent or a scanner's (`SCANNER_AGENTS`); when it comes at most
  RELANCE_MACHINE_CLICK_SECONDS after its email was sent; or when another click of the same email is at most
  `BURST` away from it, on another link or itself a machine's: both are then machine clicks, and what the human-looking
  one had earned is taken back through the score ledger.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Hashable, Iterable, Mapping

from sqlalchemy import func, select, update
from sqlmodel import Session

from relance.clock import ensure_utc
from relance.scenario.model import MACHINE_CLICK
from relance.scoring.ledger import ScoreLedger
from relance.settings import MACHINE_CLICK_SECONDS  # the rule's default, a setting (RELANCE_MACHINE_CLICK_SECONDS)
from relance.store.tables import Event, Lead, Outbox, ScoreChange

OPEN, CLICK = "email_opened", "email_clicked"
ENGAGEMENT = (OPEN, CLICK, MACHINE_CLICK)
BURST = timedelta(seconds=5)  # no one reads an email and clicks two of its links within 5 s

# Lower-case pieces of the User-Agent of mail-security scanners, link checkers and scripts: a click whose agent holds
# one is a machine's. Only names no browser carries (not "outlook" or "microsoft office", which people click from).
SCANNER_AGENTS = (
    "safelinks", "microsoft-urlanalyzer", "mimecast", "barracuda", "proofpoint", "urldefense", "ironport",
    "fireeye", "forcepoint", "symantec", "sophos", "trendmicro", "trend micro", "fortimail", "fortiguard",
    "sonicwall", "zscaler", "cloudmark", "spamtitan", "checkpoint", "kaspersky", "mcafee", "bitdefender",
    "headlesschrome", "phantomjs", "python-", "curl/", "wget/", "go-http-client", "libwww-perl", "java/",
    "httpclient", "scanner", "crawler", "spider", "bot/", "bot;", "+http",
)


def machine_request(method: str, user_agent: str | None) -> str | None:
    """Why a request on a tracked link is a machine's (a HEAD, no User-Agent, a scanner's), else None."""
    if method.upper() == "HEAD":
        return "HEAD request"
    agent = (user_agent or "").strip().lower()
    if not agent:
        return "no User-Agent"
    found = next((piece for piece in SCANNER_AGENTS if piece in agent), None)
    return None if found is None else f"user agent of a scanner ({found.strip('/;+')})"


def email_key(properties: Mapping[str, Any]) -> Hashable:
    """Which email an open or a click is of: its outbox row, else its scenario step."""
    if "outbox_id" in properties:
        return _hashable(("outbox_id", properties["outbox_id"]))
    return _hashable(("step", (properties.get("scenario"), properties.get("step_id"))))


def _hashable(key: tuple) -> Hashable:
    try:
        hash(key)
    except TypeError:  # a list or a mapping where a name or a number was expected: equal when their JSON is
        return ("json", json.dumps(key, sort_keys=True, default=str))
    return key


def _outbox_id(seen: "Seen") -> int | None:
    """The outbox row a click names, when it names one (a sender may put anything in `outbox_id`)."""
    value = seen.properties.get("outbox_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Seen:
    """An open or a click of a lead, as stored (a click found to be a machine's changes type here and in the table)."""

    id: int
    type: str
    at: datetime
    properties: dict[str, Any]

    @property
    def email(self) -> Hashable:
        return email_key(self.properties)

    @property
    def earning_key(self) -> Hashable:
        """What earns points once: an email (opens), a link of an email (human clicks)."""
        if self.type == OPEN:
            return (OPEN, self.email)
        return _hashable((self.type, self.email, self.properties.get("link")))


class Engagement:
    """The opens and clicks of a batch's leads, the batch's own among them (all are stored before the first is
    scored): read in one query, with the sending time of the emails the batch's clicks are of in another, and kept
    up to date as the batch's clicks are found to be machines'."""

    def __init__(self, session: Session, lead_ids: Iterable[int], *, window: timedelta, ledger: ScoreLedger) -> None:
        self.session, self.window, self.ledger = session, window, ledger
        self.events: dict[int, Seen] = {}
        self.lead_of: dict[int, int] = {}
        self.first: dict[tuple[int, Hashable], int] = {}  # (lead, earning key) -> id of the first such event
        self.clicks: dict[tuple[int, Hashable], list[Seen]] = defaultdict(list)  # (lead, email) -> its clicks
        ids = set(lead_ids)
        if not ids:
            return
        for event_id, lead_id, type_, at, properties in session.execute(
            select(Event.id, Event.lead_id, Event.type, Event.occurred_at, Event.properties)
            .where(Event.lead_id.in_(ids), Event.type.in_(ENGAGEMENT)).order_by(Event.id)
        ).all():
            seen = self.events[event_id] = Seen(event_id, type_, ensure_utc(at), dict(properties or {}))
            self.lead_of[event_id] = lead_id
            self.first.setdefault((lead_id, seen.earning_key), event_id)
            if type_ != OPEN:
                self.clicks[(lead_id, seen.email)].append(seen)
        outbox_ids = {i for s in self.events.values() if s.type == CLICK and (i := _outbox_id(s)) is not None}
        self.sent: dict[int, datetime] = {}
        if outbox_ids:
            for outbox_id, sent_at, attempted_at in session.execute(
                select(Outbox.id, Outbox.sent_at, Outbox.attempted_at).where(Outbox.id.in_(outbox_ids))
            ).all():
                if sent_at or attempted_at:  # a scanner may click before the sending is written: handed over counts
                    self.sent[outbox_id] = sent_at or attempted_at

    def classify(self, lead: Lead, event_id: int, *, now: datetime) -> Seen | None:
        """The open or click `event_id` as it stands (None: neither), once this click is known for a machine's or not;
        a machine click found here is stored as one, and the human clicks of its burst with it, their points taken back."""
        seen = self.events.get(event_id)
        if seen is None or seen.type == OPEN:
            return seen
        if seen.type == CLICK and (reason := self._too_soon(seen)) is not None:
            self._to_machine(lead, seen, reason, now=now)
        burst = [other for other in self.clicks[(lead.id, seen.email)]
                 if other.id != seen.id and abs(other.at - seen.at) <= BURST
                 and (MACHINE_CLICK in (other.type, seen.type) or other.properties.get("link") != seen.properties.get("link"))]
        if burst:
            reason = f"{len(burst) + 1} clicks of one email within {BURST.seconds} s"
            for click in [seen, *burst]:
                if click.type == CLICK:
                    self._to_machine(lead, click, reason, now=now)
        return seen

    def earns(self, lead_id: int, seen: Seen) -> bool:
        """Whether this open or click earns points: the first open of its email, the first human click of its link."""
        return seen.type != MACHINE_CLICK and self.first.get((lead_id, seen.earning_key)) == seen.id

    def _too_soon(self, seen: Seen) -> str | None:
        sent_at = self.sent.get(_outbox_id(seen))  # type: ignore[arg-type]
        if sent_at is None or not self.window or seen.at - sent_at > self.window:
            return None
        return f"clicked {max(0, round((seen.at - sent_at).total_seconds()))} s after the email was sent"

    def _to_machine(self, lead: Lead, seen: Seen, reason: str, *, now: datetime) -> None:
        """Store a human-looking click as a machine's, and take back the points it earned (in the ledger)."""
        key, seen.type = seen.earning_key, MACHINE_CLICK
        seen.properties = {**seen.properties, "machine": reason}
        self.session.execute(update(Event.__table__).where(Event.__table__.c.id == seen.id)
                             .values(type=MACHINE_CLICK, properties=seen.properties))
        if self.first.get((lead.id, key)) == seen.id:  # the next human click of that link, if any, is now the first
            later = [s.id for s in self.events.values()
                     if self.lead_of[s.id] == lead.id and s.type == CLICK and s.earning_key == key]
            if later:
                self.first[(lead.id, key)] = min(later)
            else:
                del self.first[(lead.id, key)]
        self.ledger.write()  # the points the batch gave so far are read from the ledger
        earned = self.session.execute(
            select(func.coalesce(func.sum(ScoreChange.points), 0))
            .where(ScoreChange.lead_id == lead.id, ScoreChange.event_id == seen.id)
        ).scalar_one()
        self.ledger.add(lead, -earned, cause=MACHINE_CLICK, now=now, event_id=seen.id,
                        scenario=seen.properties.get("scenario"), step_id=seen.properties.get("step_id"),
                        detail=f"a machine's click, not the lead's ({reason}): its points taken back")
