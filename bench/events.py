"""Idempotent ingestion of engagement events, with scoring, in batches."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from relance.ingest import IncomingEvent
from relance.sales import HANDOFF_STAGES
from relance.store.tables import Event, Lead, ScoreChange

from relance.bench.common import ingest, NOW, Stopwatch, count, database, open_world, rate, seed

BATCH = 1_000
PAGES = ["/blog/lead-scoring", "/blog/mjml", "/produit", "/tarifs", "/cas-clients/acme"]
HOT = "hot@bench.example"
HOT_PAGES = [p for p in PAGES if not p.startswith("/tarifs")]  # a pricing visit is sales-ready: it would hand her off


def _events(n: int, leads: int, rng: random.Random) -> list[IncomingEvent]:
    """A day of website and email activity: visits, opens and clicks, a few downloads."""
    made = []
    for i in range(n):
        email, at = f"lead{rng.randrange(leads)}@bench.example", NOW + timedelta(seconds=i)
        kind = rng.random()
        if kind < 0.6:
            made.append(IncomingEvent("page_visited", email, at, {"url": rng.choice(PAGES)}, f"v{i}"))
        elif kind < 0.85:
            made.append(IncomingEvent("email_opened", email, at, {"scenario": "whitepaper-nurture", "step_id": "send-guide"}, f"o{i}"))
        elif kind < 0.97:
            made.append(IncomingEvent("email_clicked", email, at, {"scenario": "whitepaper-nurture", "step_id": "send-guide",
                                                                    "url": "https://relance.example/ressources/livre-blanc-leads"}, f"c{i}"))
        else:
            made.append(IncomingEvent("downloaded", email, at, {"asset": "guide-scoring"}, f"d{i}"))
    return made


def events_per_s(work: Path, n: int, leads: int = 2_000, seed_value: int = 1) -> dict:
    """Ingest n events in batches of BATCH, then replay them all: the replay must store nothing."""
    events = _events(n, leads, random.Random(seed_value))
    with database("sqlite", work) as url:
        world = open_world(url, work)
        seed(world, due={}, waiting=leads)
        stored = 0
        with Stopwatch() as watch:
            for i in range(0, n, BATCH):
                stored += ingest(world, events[i:i + BATCH], now=NOW + timedelta(days=1)).stored
        with Stopwatch() as replay:
            again = sum(ingest(world, events[i:i + BATCH], now=NOW + timedelta(days=1)).duplicates
                        for i in range(0, n, BATCH))
        rows = count(world, select(func.count()).select_from(Event))
        scored = count(world, select(func.count()).select_from(ScoreChange))
        world.engine.dispose()
    assert stored == rows == n and again == n, f"events: {stored} stored, {rows} rows, {again} replays recognised, of {n}"
    assert scored > 0, "events: no score changed"
    return {"events": n, "seconds": round(watch.seconds, 3), "per_s": rate(n, watch.seconds),
            "replay_per_s": rate(n, replay.seconds), "score_changes": scored}


def _hot_events(n: int, start: int, rng: random.Random) -> list[IncomingEvent]:
    """One lead's visits, opens and clicks, none of them sales-ready."""
    made = []
    for i in range(start, start + n):
        at, kind = NOW + timedelta(seconds=i), rng.random()
        if kind < 0.6:
            made.append(IncomingEvent("page_visited", HOT, at, {"url": rng.choice(HOT_PAGES)}, f"hv{i}"))
        elif kind < 0.85:
            made.append(IncomingEvent("email_opened", HOT, at, {"scenario": "whitepaper-nurture", "step_id": f"send-{i % 40}"}, f"ho{i}"))
        else:
            made.append(IncomingEvent("email_clicked", HOT, at, {"scenario": "whitepaper-nurture", "step_id": f"send-{i % 40}",
                                                                 "url": "https://relance.example/ressources/livre-blanc-leads"}, f"hc{i}"))
    return made


def hot_lead_events_per_s(work: Path, n: int, warm: int = 100, seed_value: int = 1) -> dict:
    """n events of one lead in batches of BATCH, the lead hot from the start: past the hand-off score and grade with
    no sales-ready action, so every event checks the hand-off; the batches' history grows, their cost must not."""
    rng = random.Random(seed_value)
    now = NOW + timedelta(days=1)
    with database("sqlite", work) as url:
        world = open_world(url, work)
        form = IncomingEvent("form_submitted", HOT, NOW, {"job_title": "Directrice marketing", "sector": "saas", "country": "FR",
                                                          "company": "ACME", "first_name": "Léa"}, "hot-form")
        ingest(world, [form, *_hot_events(warm, -warm, rng)], now=now)
        _check_hot(world, "before the batches")
        batches: list[float] = []
        stored = 0
        with Stopwatch() as watch:
            for i in range(0, n, BATCH):
                with Stopwatch() as one:
                    stored += ingest(world, _hot_events(min(BATCH, n - i), i, rng), now=now).stored
                batches.append(one.seconds)
        _check_hot(world, "after the batches")
        world.engine.dispose()
    assert stored == n, f"hot lead: {stored} events stored of {n}"
    return {"events": n, "batch": BATCH, "seconds": round(watch.seconds, 3), "per_s": rate(n, watch.seconds),
            "first_batch_s": round(batches[0], 3), "last_batch_s": round(batches[-1], 3)}


def _check_hot(world, when: str) -> None:
    """The lead is at the hand-off score and grade and was not handed off: the check ran at every event."""
    with Session(world.engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == HOT)).scalars().one()
        handoff = world.workspace.scoring.handoff
        assert world.workspace.scoring.meets(handoff, score=lead.score, grade=lead.grade) and lead.stage in HANDOFF_STAGES, (
            f"hot lead {when}: score {lead.score}, grade {lead.grade}, stage {lead.stage}: not a hot lead waiting for a sales-ready action")
