"""The design a user writes first: one Prefect flow run per lead, doing the same send step."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from relance.advancing import advance_due
from relance.delivery import deliver
from relance.email.transports import NullTransport

from relance.bench.common import NOW, SCENARIO, Stopwatch, World, database, open_world, rate, seed, sent_rows


@flow(name="naive-send-one-lead", persist_result=False)
def send_one_lead(world: World, transport: NullTransport) -> int:
    """Claim one due enrollment, advance it, deliver its email: the engine's work for one lead."""
    batch = advance_due(world.engine, world.settings, scenario=SCENARIO, now=NOW, limit=1, workspace=world.workspace)
    delivered = deliver(world.engine, world.settings, outbox_ids=batch.outbox_ids, now=NOW, transport=transport,
                        templates=world.templates, manager=None,
                        policy=world.workspace.sending)
    return delivered.sent


def naive_prefect_leads_per_s(work: Path, n: int) -> dict:
    with database("sqlite", work) as url:
        world = open_world(url, work)
        seed(world, due={NOW: n + 1})
        transport = NullTransport()
        send_one_lead(world, transport)  # the first run starts the ephemeral API: outside the clock
        with Stopwatch() as watch:
            sent = sum(send_one_lead(world, transport) for _ in range(n))
        written = sent_rows(world)
        world.engine.dispose()
    assert sent == n and written == n + 1, f"naive: {sent} sent, {written} rows, wanted {n} (+1 warm-up)"
    return {"leads": n, "seconds": round(watch.seconds, 3), "per_s": rate(n, watch.seconds)}
