"""The scheduled jobs behind `relance flow sla|reengage` (decay lives in relance.decay)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from relance.enrollment import enroll_leads
from relance.plans import current_version_ids, plan_for_version
from relance.sales import SlaReport, flag_sla, later_due
from relance.scenario.model import EventTrigger
from relance.store.tables import Lead
from relance.workspace import Workspace


def run_sla(session: Session, *, workspace: Workspace, now: datetime) -> SlaReport:
    """Flag the open hand-offs past their target or deadline, in the caller's transaction (it commits)."""
    return flag_sla(session, scoring=workspace.scoring, now=now)


def reengage_scenarios(workspace: Workspace) -> list[str]:
    """Scenarios started by `said_later`; scoring.yaml `later.scenario` first."""
    names = [n for n, p in workspace.plans.items()
             if isinstance(p.scenario.trigger, EventTrigger) and p.scenario.trigger.event == "said_later"]
    preferred = workspace.scoring.later.scenario if workspace.scoring.later else None
    return sorted(names, key=lambda n: (n != preferred, n))


def run_reengage(session: Session, *, workspace: Workspace, now: datetime) -> int:
    """Enroll the "later" leads whose date has come, in the caller's transaction (it commits); each handoff is
    re-engaged once."""
    names = reengage_scenarios(workspace)
    preferred = workspace.scoring.later.scenario if workspace.scoring.later else None
    if (broken := workspace.waiting.get(preferred or "")) is not None:
        raise LookupError(f"the re-engagement scenario {broken.name} is broken ({len(broken.problems)} problem(s): relance "
                          f"validate {broken.path}): the \"later\" leads wait, nobody is lost; fix it and run again")
    if not names:
        hint = f" (broken, maybe one of them: {', '.join(sorted(workspace.waiting))})" if workspace.waiting else ""
        raise LookupError(f"no scenario is triggered by said_later{hint}: add one (scoring.yaml later.scenario names it)")
    enrolled = 0
    versions = current_version_ids(session)
    if names[0] not in versions:
        raise LookupError(f"scenario {names[0]} is not registered yet: run a tick or `relance validate` first")
    plan = plan_for_version(session, versions[names[0]])
    for handoff in later_due(session, now=now):
        lead = session.get(Lead, handoff.lead_id)
        if lead.suppressed is None:
            enrolled += enroll_leads(session, plan=plan, version_id=versions[names[0]], leads=[lead],
                                     scoring=workspace.scoring, now=now)
        handoff.reengaged_at = now
    return enrolled
