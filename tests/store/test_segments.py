"""Segment narrowing: SQL may only drop leads that Python's exact test would refuse, on both backends."""

from __future__ import annotations

import itertools
from datetime import timedelta

from pydantic import TypeAdapter
from sqlalchemy import select

from relance.engine.conditions import holds
from relance.engine.triggers import may_enter
from relance.enrollment import lead_facts
from relance.scenario.model import Condition, ReentryAfter, Scenario
from relance.scenario.plan import compile_scenario
from relance.scoring.config import ScoringConfig
from relance.store.repo import ensure_scenario_version, upsert_lead
from relance.store.segments import may_enter_again, narrowing
from relance.store.tables import Enrollment, Lead

SEGMENTS = [
    {"all": [{"stage_in": ["nurturing"]}, {"grade_at_least": "C"}]},
    {"any": [{"score_at_least": 40}, {"stage_in": ["mql", "later"]}]},
    {"any": [{"score_at_least": 40}, {"tag": "vip"}]},  # a tag: SQL cannot narrow, everyone is read
    {"all": [{"grade_at_least": "B"}, {"not": {"stage_in": ["customer"]}}, {"tag": "vip"}]},
]


def _leads(session, now):
    stages, grades, scores = ["lead", "nurturing", "mql", "customer", "later"], ["A", "B", "C", "D"], [0, 39, 40, 80]
    for i, (stage, grade, score) in enumerate(itertools.product(stages, grades, scores)):
        lead = upsert_lead(session, email=f"l{i}@x.example", now=now)
        lead.stage, lead.grade, lead.score, lead.tags = stage, grade, score, ["vip"] if i % 3 == 0 else []
    session.commit()
    return session.exec(select(Lead)).scalars().all()


def test_a_segment_narrowed_in_sql_keeps_every_lead_that_matches_it(session, clock):
    leads = _leads(session, clock.now())
    for raw in SEGMENTS:
        segment = TypeAdapter(Condition).validate_python(raw)
        matching = {l.id for l in leads if holds(segment, lead=lead_facts(l, ScoringConfig()), events=[], now=clock.now(),
                                                   since=clock.now(), scenario="s")}
        clause = narrowing(segment)
        read = {l.id for l in leads} if clause is None else set(session.exec(select(Lead.id).where(clause)).scalars())
        assert matching <= read, raw
        assert matching, raw
        if raw is SEGMENTS[0]:  # stage and grade: exactly the matching leads are read
            assert read == matching


def test_only_leads_allowed_in_again_are_read(session, clock):
    plan = compile_scenario(Scenario.model_validate(
        {"scenario": "s", "trigger": {"event": "downloaded"}, "steps": [{"id": "a", "send": "t", "subject": "x"}]}))
    version = ensure_scenario_version(session, plan=plan, source_path="s.yaml", now=clock.now())
    now = clock.now()
    histories = {  # lead -> its past enrollments in "s": (status, days ago)
        "never-in": [], "inside": [("active", 1)], "left-10-days-ago": [("completed", 10)],
        "left-40-days-ago": [("exited", 40)], "twice": [("completed", 40), ("completed", 5)],
    }
    ids = {}
    for name, past in histories.items():
        lead = upsert_lead(session, email=f"{name}@x.example", now=now)
        session.flush()
        ids[name] = lead.id
        for status, days in past:
            session.add(Enrollment(lead_id=lead.id, scenario="s", version_id=version.id, status=status,
                                   entered_at=now - timedelta(days=days)))
    session.commit()
    for reentry in ("never", "always", ReentryAfter(after=timedelta(days=30))):
        expected = {name for name, past in histories.items() if may_enter(
            reentry, previous_entries=[now - timedelta(days=d) for _, d in past], active=any(s == "active" for s, _ in past), now=now)}
        read = set(session.exec(select(Lead.email).where(may_enter_again("s", reentry, now))).scalars())
        assert {email.split("@")[0] for email in read} == expected, reentry
