"""Decay and the score ledger, on both backends, over virtual months."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlmodel import Session

from relance.decay import decay_scores
from relance.ingest import IncomingEvent, ingest_events
from relance.leads import lead_summary
from relance.scoring.config import ScoringConfig
from relance.store.repo import upsert_lead
from relance.store.tables import Lead
from relance.workspace import Workspace
from tests.units import committed

SCORING = ScoringConfig.model_validate({
    "behaviour": {"demo_requested": 50, "page_visited": 10},
    "decay": {"every": "30d", "percent": 25},
    "mql": {"score_at_least": 40, "grade_at_least": "D"},
})


def _setup(engine, clock):
    with Session(engine) as session:
        upsert_lead(session, email="idle@acme.example", now=clock.now())
        upsert_lead(session, email="busy@acme.example", now=clock.now())
        session.commit()
    workspace = Workspace(scoring=SCORING)
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("demo_requested", e, clock.now(), {}) for e in ("idle@acme.example", "busy@acme.example")], now=clock.now())
    return workspace


def _scores(engine):
    with Session(engine) as session:
        return {l.email.split("@")[0]: l.score for l in session.exec(select(Lead)).scalars()}


def test_idle_scores_fade_each_period_and_active_ones_do_not(engine, clock):
    workspace = _setup(engine, clock)
    assert committed(engine, decay_scores, scoring=SCORING, now=clock.advance(timedelta(days=29))).leads == 0
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("page_visited", "busy@acme.example", clock.now(), {"path": "/"})], now=clock.now())
    report = committed(engine, decay_scores, scoring=SCORING, now=clock.advance(timedelta(days=1)))
    assert (report.leads, report.points) == (1, -12)  # 25 % of 50, rounded
    assert _scores(engine) == {"idle": 38, "busy": 60}
    assert committed(engine, decay_scores, scoring=SCORING, now=clock.now()).leads == 0  # same day again: decays once
    committed(engine, decay_scores, scoring=SCORING, now=clock.advance(timedelta(days=30)))
    assert _scores(engine) == {"idle": 28, "busy": 45}


def test_the_ledger_and_stage_history_explain_the_score_in_lead_show(engine, clock):
    _setup(engine, clock)
    committed(engine, decay_scores, scoring=SCORING, now=clock.advance(timedelta(days=31)))
    summary = committed(engine, lead_summary, email="idle@acme.example", scoring=ScoringConfig())
    assert [(c["cause"], c["points"], c["score_after"]) for c in summary["score_ledger"]] == [("demo_requested", 50, 50), ("decay", -12, 38)]
    assert [(s["from"], s["to"]) for s in summary["stage_history"]] == [("lead", "mql")]
    assert "score 50 >= 40" in summary["stage_history"][0]["reason"]
    assert summary["suppression"] == {"suppressed": False, "reason": None}
