"""Property: the database alone enforces `reentry`, exactly, even for a worker whose view of the past is stale.

A worker that read a lead's enrollments a moment ago may try to enroll it again after another worker
enrolled, advanced and completed it. So each attempt here goes straight to `insert_enrollments`,
skipping the reading that normally saves the work; what enters must still be exactly what
`may_enter` allows given everything committed.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import delete, select, update
from sqlmodel import Session

from relance.engine.triggers import may_enter
from relance.scenario.model import ReentryAfter
from relance.scenario.model import Scenario
from relance.scenario.plan import compile_scenario
from relance.store.repo import ensure_scenario_version, insert_enrollments, upsert_lead
from relance.store.tables import Enrollment, Lead, ScenarioVersion

PLAN = compile_scenario(Scenario.model_validate(
    {"scenario": "s", "trigger": {"event": "downloaded"}, "steps": [{"id": "a", "end": True}]}))
REENTRIES = {"never": "never", "always": "always", "after 10h": ReentryAfter(after=timedelta(hours=10))}
operations = st.lists(st.tuples(st.sampled_from(["enroll", "enroll", "finish"]), st.integers(0, 2), st.integers(0, 8)),
                      min_size=1, max_size=30)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reentry=st.sampled_from(sorted(REENTRIES)), ops=operations)
def test_what_enters_is_exactly_what_reentry_allows(engine, clock, reentry, ops):
    rule = REENTRIES[reentry]
    with Session(engine) as session:
        session.execute(delete(Enrollment))
        session.commit()
        if not session.execute(select(Lead.id)).first():
            for n in range(3):
                upsert_lead(session, email=f"{n}@acme.example", now=clock.now())
            ensure_scenario_version(session, plan=PLAN, source_path="s.yaml", now=clock.now())
            session.commit()
        leads = list(session.execute(select(Lead.id).order_by(Lead.id)).scalars())
        version = session.execute(select(ScenarioVersion.id)).scalar()
    now = clock.now()
    past: dict[int, list] = {lead: [] for lead in leads}  # the model: entry times, and whether inside now
    inside: dict[int, bool] = {lead: False for lead in leads}
    for action, who, hours in ops:
        now += timedelta(hours=hours)
        lead = leads[who]
        with Session(engine) as session:
            if action == "finish":
                session.execute(update(Enrollment).where(Enrollment.lead_id == lead, Enrollment.status == "active")
                                .values(status="completed", due_at=None, left_at=now))
                inside[lead] = False
            else:
                expected = may_enter(rule, previous_entries=past[lead], active=inside[lead], now=now)
                row = dict(lead_id=lead, scenario="s", version_id=version, entered_at=now, step_id="a", status="active",
                           due_at=now, waiting=None, step_entered_at=now, left_at=None, exit_reason=None, state={})
                entered = insert_enrollments(session, [row], reentry=rule, now=now)
                assert bool(entered) == expected, (reentry, action, who, past[lead], inside[lead], now)
                if entered:
                    past[lead].append(now)
                    inside[lead] = True
            session.commit()
    with Session(engine) as session:
        stored = session.execute(select(Enrollment.lead_id, Enrollment.entered_at)).all()
    assert sorted((r.lead_id, r.entered_at) for r in stored) == sorted((l, t) for l, times in past.items() for t in times)
