"""Applying a step's effects inside the batch that advanced it: one `apply_<effect>` per effect kind.

The interpreter decides what a step does; these write it, in the batch's transaction: an email or a
notification goes to the outbox (sent after the commit), a score, a stage or a hand-off changes the lead,
an `enroll` step names the scenario its lead enters once the batch is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never

from sqlmodel import Session

from relance.engine.types import AdjustScore, ChangeLead, Effect, EnrollInto, OpenHandoff, NotifySomeone, SendEmail
from relance.sales import open_handoff
from relance.scenario.plan import Plan
from relance.scoring.config import ScoringConfig
from relance.scoring.ledger import ScoreLedger, move_stage, reach_mql
from relance.store.tables import Lead

CHANGES_LEAD = (AdjustScore, ChangeLead, OpenHandoff)  # effects after which a wait on the lead's state may hold

HANDOFF_SUBJECT = "Lead à suivre : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }})"


@dataclass
class Written:
    """What a batch's effects leave to write once they are all applied: outbox rows, leads to enroll elsewhere."""

    outbox_rows: list[dict[str, Any]] = field(default_factory=list)
    enroll_into: list[tuple[str, Any]] = field(default_factory=list)  # (scenario, lead)


@dataclass(frozen=True)
class Applying:
    """Where one effect applies: the batch's session and score ledger, the lead and enrollment it is of, its scenario,
    the tick's time."""

    session: Session
    ledger: ScoreLedger
    scoring: ScoringConfig
    lead: Any  # a Lead model when the effect changes it, else the plain row the batch read
    enrollment_id: int
    memory: dict[str, Any]
    plan: Plan
    now: datetime
    written: Written


def apply_effect(effect: Effect, at: Applying) -> None:
    """Write one effect; every kind of effect has its function, and a new kind fails the type check here."""
    match effect:
        case SendEmail():
            apply_send_email(effect, at)
        case AdjustScore():
            apply_adjust_score(effect, at)
        case ChangeLead():
            apply_change_lead(effect, at)
        case OpenHandoff():
            apply_open_handoff(effect, at)
        case NotifySomeone():
            apply_notify_someone(effect, at)
        case EnrollInto():
            apply_enroll_into(effect, at)
        case _:
            assert_never(effect)


def apply_send_email(effect: SendEmail, at: Applying) -> None:
    """An email to the lead, pending in the outbox."""
    at.written.outbox_rows.append(dict(
        enrollment_id=at.enrollment_id, step_id=effect.step_id, visit=effect.visit, lead_id=at.lead.id,
        scenario=at.plan.name, template=effect.template, subject=effect.subject, to_address=at.lead.email,
        kind="lead", options={"from": effect.from_, "reply_to": effect.reply_to, "preheader": effect.preheader,
                              **({"if_held": "skip"} if at.plan.scenario.held == "skip" else {})},
        marketing=not (effect.transactional or at.plan.scenario.transactional), priority=at.plan.scenario.rank,
        status="pending", attempts=0, created_at=at.now,
    ))


def apply_adjust_score(effect: AdjustScore, at: Applying) -> None:
    """Points to the lead's score (in its ledger), and MQL if the score now reaches it."""
    at.ledger.add(at.lead, effect.points, cause="step", now=at.now, scenario=at.plan.name, step_id=effect.step_id)
    reach_mql(at.session, at.lead, at.scoring, now=at.now)


def apply_change_lead(effect: ChangeLead, at: Applying) -> None:
    """A `set` step: the lead's stage (in its history), fields and tags."""
    lead: Lead = at.lead
    if effect.stage:
        move_stage(at.session, lead, effect.stage, now=at.now, by=f"{at.plan.name}/{effect.step_id}", reason="scenario step")
    if effect.fields:
        lead.fields = {**(lead.fields or {}), **effect.fields}
    if effect.tags:
        lead.tags = sorted(set(lead.tags or ()) | set(effect.tags))
    lead.updated_at = at.now


def apply_open_handoff(effect: OpenHandoff, at: Applying) -> None:
    """The lead goes to sales (relance.sales writes the hand-off and its notice, which explains the score from the
    ledger: the batch's points so far are written first)."""
    at.ledger.write()
    open_handoff(at.session, at.lead, scoring=at.scoring, now=at.now, source=f"{at.plan.name}/{effect.step_id}",
                 owner=effect.owner, team=effect.team)


def apply_notify_someone(effect: NotifySomeone, at: Applying) -> None:
    """An internal email or a webhook about the lead, pending in the outbox."""
    common = dict(enrollment_id=at.enrollment_id, step_id=effect.step_id, lead_id=at.lead.id, scenario=at.plan.name,
                  visit=at.memory.get("visits", {}).get(effect.step_id, 1) - 1, status="pending", attempts=0,
                  created_at=at.now, marketing=False, priority=at.plan.scenario.rank)
    if effect.email:
        at.written.outbox_rows.append(dict(
            common, template=effect.template or "sales-handoff", subject=effect.subject or HANDOFF_SUBJECT,
            to_address=effect.email, kind="internal", options={},
        ))
    elif effect.webhook:
        at.written.outbox_rows.append(dict(common, template="", subject="", to_address=effect.webhook,
                                           kind="webhook", options={}))


def apply_enroll_into(effect: EnrollInto, at: Applying) -> None:
    """The lead enters another scenario once the batch is written (one bulk enrollment per scenario)."""
    at.written.enroll_into.append((effect.scenario, at.lead))
