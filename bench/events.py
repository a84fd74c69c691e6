"""Idempotent ingestion of engagement events, with scoring, in batches."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from relance.ingest import IncomingEvent, ingest_events
from relance.store.tables import Event, ScoreChange

from bench.common import NOW, Stopwatch, count, database, open_world, rate, seed

BATCH = 1_000
PAGES = ["/blog/lead-scoring", "/blog/mjml", "/produit", "/tarifs", "/cas-clients/acme"]


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
                stored += ingest_events(world.engine, world.library, events[i:i + BATCH], now=NOW + timedelta(days=1)).stored
        with Stopwatch() as replay:
            again = sum(ingest_events(world.engine, world.library, events[i:i + BATCH], now=NOW + timedelta(days=1)).duplicates
                        for i in range(0, n, BATCH))
        rows = count(world, select(func.count()).select_from(Event))
        scored = count(world, select(func.count()).select_from(ScoreChange))
        world.engine.dispose()
    assert stored == rows == n and again == n, f"events: {stored} stored, {rows} rows, {again} replays recognised, of {n}"
    assert scored > 0, "events: no score changed"
    return {"events": n, "seconds": round(watch.seconds, 3), "per_s": rate(n, watch.seconds),
            "replay_per_s": rate(n, replay.seconds), "score_changes": scored}
