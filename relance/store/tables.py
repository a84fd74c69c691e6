"""The SQL tables (SQLModel). Alembic migrations in `relance/store/migrations` create them.

Times are timezone-aware UTC (`UTCDateTime`); JSON columns hold small documents
(lead fields and tags, event properties, stored plans, step-log details).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, CheckConstraint, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from relance.store.types import BigInt, UTCDateTime


def _utc(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _json(default_factory: Any) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=False))


class Lead(SQLModel, table=True):
    """A person who left contact details."""

    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True, max_length=320)
    first_name: str = ""
    last_name: str = ""
    job_title: str = ""
    company: str = ""
    sector: str = ""
    company_revenue: Optional[int] = Field(default=None, sa_type=BigInt)  # euros: a large company's exceed 2**31
    country: str = Field(default="", max_length=2)
    timezone: str = "Europe/Paris"
    language: str = Field(default="fr", max_length=8)
    source: str = ""
    stage: str = Field(default="lead", index=True)
    score: int = Field(default=0, sa_type=BigInt)  # thousands of events may add up past 2**31
    fit: int = 0
    grade: str = Field(default="D", max_length=1)
    fields: dict = _json(dict)
    tags: list = _json(list)
    suppressed: Optional[str] = None
    created_at: datetime = _utc()
    updated_at: datetime = _utc()


# A lead's profile: what a form or an import brings (besides the email), what `lead show`, templates and webhooks show.
PROFILE_FIELDS: tuple[str, ...] = (
    "first_name", "last_name", "job_title", "company", "sector", "company_revenue", "country", "timezone", "language",
    "source",
)


def profile_of(lead: Any) -> dict[str, Any]:
    """The lead's email and profile fields, as plain data (a Lead or a row with those columns)."""
    return {"email": lead.email, **{name: getattr(lead, name) for name in PROFILE_FIELDS}}


class Event(SQLModel, table=True):
    """Something a lead did or that happened to a lead; stored once per idempotency key."""

    __table_args__ = (Index("ix_event_lead_time", "lead_id", "occurred_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    type: str = Field(index=True, max_length=64)
    occurred_at: datetime = _utc()
    properties: dict = _json(dict)
    idempotency_key: str = Field(unique=True, max_length=200)
    received_at: datetime = _utc()


class ScenarioVersion(SQLModel, table=True):
    """One compiled version of a scenario: the plan definition and its content hash."""

    __tablename__ = "scenario_version"
    __table_args__ = (UniqueConstraint("scenario", "hash", name="uq_scenario_version_hash"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    scenario: str = Field(index=True, max_length=100)
    hash: str = Field(max_length=64)
    definition: dict = _json(dict)
    source_path: str = ""
    created_at: datetime = _utc()


class Enrollment(SQLModel, table=True):
    """A lead inside a scenario, pinned to the version it entered with."""

    __table_args__ = (
        Index("ix_enrollment_due", "scenario", "status", "due_at"),
        Index("ix_enrollment_lead", "lead_id", "scenario"),
        # at most one active enrollment of a lead in a scenario, whatever path enrolls and however many workers run
        Index("uq_enrollment_active", "lead_id", "scenario", unique=True,
              sqlite_where=text("status = 'active'"), postgresql_where=text("status = 'active'")),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    scenario: str = Field(max_length=100)
    version_id: int = Field(foreign_key="scenario_version.id")
    status: str = Field(default="active", max_length=16)  # active | completed | exited | failed
    step_id: Optional[str] = None  # the step to run next, or the step being waited at
    due_at: Optional[datetime] = _utc(default=None)  # when to run next; None once it has left
    waiting: Optional[dict] = Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))  # what a wait_until awaits
    state: dict = _json(dict)  # sticky split variants, visit counters, last send per step
    entered_at: datetime = _utc()
    step_entered_at: Optional[datetime] = _utc(default=None)
    left_at: Optional[datetime] = _utc(default=None)
    exit_reason: Optional[str] = None


# what an outbox row is: an email to the lead (tracked, with one-click unsubscribe; cancelled if the lead is
# suppressed), staff mail (hand-off, SLA, withdrawn, notify to a person, alerts: never expires) or a webhook
OUTBOX_KINDS = ("lead", "internal", "webhook")


class Outbox(SQLModel, table=True):
    """One email to send, written before delivery so a retry or a crash never sends twice."""

    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", "visit", name="uq_outbox_enrollment_step"),
        Index("ix_outbox_status", "status", "created_at"),
        Index("ix_outbox_lead_attempted", "lead_id", "attempted_at"),  # the caps count a lead's recent sends
        CheckConstraint("kind IN ('lead', 'internal', 'webhook')", name="ck_outbox_kind"),  # OUTBOX_KINDS
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    enrollment_id: Optional[int] = Field(default=None, foreign_key="enrollment.id")
    step_id: str = ""
    visit: int = 0
    lead_id: int = Field(foreign_key="lead.id")
    scenario: str = ""
    template: str
    subject: str = ""  # the Jinja source until sent, then the rendered subject
    kind: str = Field(default="lead", max_length=16, sa_column_kwargs={"server_default": "lead"})  # OUTBOX_KINDS
    options: dict = _json(dict)  # from, reply_to, preheader; staff mail's context and alert_for; requeued_at
    to_address: str
    # pending -> sending -> sent | failed | unknown (it may have left: an operator decides); skipped (suppressed)
    status: str = Field(default="pending", max_length=16)
    message_id: Optional[str] = Field(default=None, index=True)
    attempts: int = 0
    error: Optional[str] = None
    created_at: datetime = _utc()
    attempted_at: Optional[datetime] = _utc(default=None)  # when it was last handed to the transport
    sent_at: Optional[datetime] = _utc(default=None)
    # sending.yaml (relance.sending): what the caps count, who goes first, and what they hold back
    marketing: bool = Field(default=True, sa_column_kwargs={"server_default": text("true")})  # false: transactional, staff mail
    priority: int = Field(default=50, sa_column_kwargs={"server_default": "50"})  # the scenario's priority
    hold_until: Optional[datetime] = _utc(default=None)  # held back by the policy: not sent before this
    held: Optional[str] = Field(default=None, max_length=200)  # why the policy last held it back (kept once sent)


class Suppression(SQLModel, table=True):
    """An address relance must never mail again (a lead or not yet one), with the first reason given; or, chosen on the
    unsubscribe page, a preference: a narrower `scope` and/or an end (`until`). Permanent: scope `all`, no `until`."""

    email: str = Field(primary_key=True, max_length=320)  # `sha256:<email_hash>` once the person is forgotten
    email_hash: str = Field(max_length=64, unique=True, index=True)  # sha256 of the address: how every door looks it up
    reason: str = Field(max_length=32)  # unsubscribed | bounced | complained | imported | ...
    source: str = Field(default="", max_length=200)  # where it came from: link, cli, api, ses, import FILE
    at: datetime = _utc()
    scope: str = Field(default="all", max_length=32, sa_column_kwargs={"server_default": "all"})  # all | except_newsletter
    until: Optional[datetime] = _utc(default=None)  # a pause's end: mailed again from then on; None: for good


class StepLog(SQLModel, table=True):
    """A trace row per executed step: the path a lead took, and why."""

    __tablename__ = "step_log"
    __table_args__ = (Index("ix_step_log_scenario_step", "scenario", "step_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    enrollment_id: int = Field(foreign_key="enrollment.id", index=True)
    lead_id: int = Field(foreign_key="lead.id")
    scenario: str = Field(max_length=100)
    version_id: int
    step_id: str
    kind: str = Field(max_length=16)  # send | wait | if | ... | enter | exit
    outcome: str = Field(max_length=32)  # e.g. sent, then, else, timeout, waiting, left, exited:goal
    at: datetime = _utc()
    detail: dict = _json(dict)


class ScoreChange(SQLModel, table=True):
    """The score ledger: every change of a lead's behaviour score, with its cause."""

    __tablename__ = "score_change"
    __table_args__ = (Index("ix_score_change_lead", "lead_id", "at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    points: int
    score_after: int = Field(sa_type=BigInt)
    cause: str = Field(max_length=64)  # an event type, "step", "decay"
    event_id: Optional[int] = Field(default=None, foreign_key="event.id")
    scenario: Optional[str] = None
    step_id: Optional[str] = None
    detail: str = ""
    at: datetime = _utc()


class StageChange(SQLModel, table=True):
    """The stage history: every move of a lead between stages, who made it and why."""

    __tablename__ = "stage_change"
    __table_args__ = (Index("ix_stage_change_lead", "lead_id", "at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    from_stage: str = Field(max_length=32)
    to_stage: str = Field(max_length=32)
    by: str = Field(default="relance", max_length=320)  # relance, a scenario step, or a person
    reason: str = ""
    at: datetime = _utc()


class Handoff(SQLModel, table=True):
    """A lead handed to sales: owner, SLA deadline and target, and the answer sales gave."""

    __table_args__ = (Index("ix_handoff_status", "status", "deadline_at"), Index("ix_handoff_lead", "lead_id"))

    id: Optional[int] = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    status: str = Field(default="open", max_length=16)  # open | accepted | rejected | later | withdrawn (the lead left)
    owner: str = Field(max_length=320)
    team: Optional[str] = None
    source: str = ""  # what handed it off: scenario/step, or the event that reached the hand-off point
    opened_at: datetime = _utc()
    target_at: datetime = _utc()
    deadline_at: datetime = _utc()
    target_missed_at: Optional[datetime] = _utc(default=None)
    deadline_missed_at: Optional[datetime] = _utc(default=None)
    answered_at: Optional[datetime] = _utc(default=None)
    answered_by: Optional[str] = None
    reason: Optional[str] = None
    note: str = ""
    bant: dict = _json(dict)
    later_until: Optional[datetime] = _utc(default=None)
    reengaged_at: Optional[datetime] = _utc(default=None)


class Cost(SQLModel, table=True):
    """What a source (campaign, channel) cost, and the gross margin it brought, for CPL / CPA / ROI."""

    id: Optional[int] = Field(default=None, primary_key=True)
    source: str = Field(index=True, max_length=100)
    amount: float = 0.0
    margin: float = 0.0
    period: str = ""
    note: str = ""
    created_at: datetime = _utc()


class Deal(SQLModel, table=True):
    """A deal sales won or lost with a lead: what it brought (amount, gross margin) or why it was lost."""

    __table_args__ = (Index("ix_deal_lead", "lead_id", "closed_at"), Index("ix_deal_closed", "closed_at"))

    id: Optional[int] = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    outcome: str = Field(max_length=8)  # won | lost
    kind: str = Field(default="new", max_length=8)  # new (the lead's first won deal) | upsell (it had won one before)
    amount: float = 0.0
    margin: float = 0.0  # the gross margin: part of the amount
    reason: Optional[str] = Field(default=None, max_length=32)  # lost: one of relance.deals.LOST_REASONS
    note: str = ""
    by: str = Field(default="sales", max_length=320)
    closed_at: datetime = _utc()  # the day it was won or lost (`--on`)
    recorded_at: datetime = _utc()
