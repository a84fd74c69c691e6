"""A tick killed at any moment strands at most the one message in flight, and nothing is sent twice."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import select
from sqlmodel import Session

from relance.plans import sync_scenarios
from relance.store.tables import Outbox
from relance.workspace import load_workspace

from harness import FULL, add_leads, files_sent, finish, start
from tests.units import committed

KILLS = 30 if FULL else 8
LEADS = 2_000 if FULL else 300


def _statuses(engine) -> Counter:
    with Session(engine) as session:
        return Counter(session.execute(select(Outbox.status)).scalars())


def _left_sending(engine, now) -> int:
    """Rows a run at `now` left `sending` (earlier runs' become `unknown` once the next tick finds them)."""
    with Session(engine) as session:
        return len(session.execute(select(Outbox.id).where(Outbox.status == "sending", Outbox.attempted_at == now)).all())


def test_killing_ticks_at_random_moments_strands_only_what_was_in_flight(engine, settings, clock, tmp_path):
    committed(engine, sync_scenarios, now=clock.now(), workspace=load_workspace(settings))
    add_leads(engine, clock.now(), LEADS)
    chance = random.Random(20261201)
    folders, kills = [], []
    for cycle in range(KILLS):
        folders.append(tmp_path / f"outbox-{cycle}")
        # the drip's second email is due a day later: half the cycles work on each
        now = clock.now() + timedelta(days=cycle * 2 // KILLS, minutes=11 * cycle)
        worker = start(settings, folders[-1], "tick", "drip", now.isoformat(), "50", WORKER_SEND_DELAY="0.003")
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        time.sleep(chance.uniform(0.0, 1.2))
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        kills.append(worker.returncode)
        in_flight = _left_sending(engine, now)
        assert in_flight <= 1, f"cycle {cycle}: {in_flight} rows left `sending` by one kill"
    assert kills.count(-signal.SIGKILL) >= KILLS // 2, kills  # most were really killed mid-run
    # then the ticks run to the end: every email goes out once, nothing cut off is resent
    # (a busy machine may have enrolled some leads only in the last cycle: the final ticks run just after
    # it, then a day later, so the first still finds every pending email within the 48 h it may wait)
    for day in (0, 1):
        folders.append(tmp_path / f"outbox-final-{day}")
        finish([start(settings, folders[-1], "tick", "drip", (now + timedelta(days=day, minutes=1)).isoformat())])
    statuses = _statuses(engine)  # the final ticks found what the kills cut off mid-send, and left it `unknown`
    assert set(statuses) <= {"sent", "unknown"} and statuses["unknown"] <= KILLS, statuses
    reached = files_sent(*folders)
    assert max(reached.values()) == 1, "an email reached the transport twice"
    with Session(engine) as session:
        rows = session.execute(select(Outbox.id, Outbox.status, Outbox.to_address, Outbox.step_id)).all()
    assert len(rows) == 2 * LEADS and len({(r.to_address, r.step_id) for r in rows}) == 2 * LEADS
    assert {str(r.id) for r in rows if r.status == "sent"} <= set(reached)  # every `sent` row did reach it
