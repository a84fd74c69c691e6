"""Emails per second: the rendering floor and the engine end to end.

Both sides of `floor_ratio` are measured the same way: ROUNDS rounds each, the fastest kept (a
floor is the least the work can cost; a slower round only measures the machine's other work)."""

from __future__ import annotations

from pathlib import Path

from relance.email.transports import NullTransport
from relance.tick import run_tick_inline

from relance.bench.common import NOW, SCENARIO, Stopwatch, World, database, open_world, rate, seed, sent_rows


def _first_send(world: World):
    """The template and subject of SCENARIO's first step (a send)."""
    plan = world.workspace.plans[SCENARIO]
    step = plan.steps[plan.first]
    return step.send, step.subject


ROUNDS = 3


def floor_emails_per_s(work: Path, n: int, rounds: int = ROUNDS) -> dict:
    """The per-email work alone, in a tight loop: Jinja, MJML -> HTML, text part, for n different leads."""
    return _fastest([_floor_round(work, n) for _ in range(rounds)])


def engine_emails_per_s(work: Path, backend: str, n: int, rounds: int = ROUNDS) -> dict:
    """A real tick: claim due enrollments, interpret, render, deliver (null transport), outbox + step log, commit."""
    return _fastest([_engine_round(work, backend, n) for _ in range(rounds)])


def _fastest(runs: list[dict]) -> dict:
    return {**min(runs, key=lambda r: r["seconds"]), "rounds_per_s": [r["per_s"] for r in runs]}


def _floor_round(work: Path, n: int) -> dict:
    with database("sqlite", work) as url:
        world = open_world(url, work)
        template, subject = _first_send(world)
        contexts = [{"lead": {"email": f"lead{i}@bench.example", "first_name": f"Léa{i}", "last_name": "Martin",
                              "job_title": "Directrice marketing", "company": "ACME", "sector": "saas", "country": "FR",
                              "score": 0, "grade": "D", "stage": "lead", "fields": {}},
                     "unsubscribe_url": f"https://t.relance.example/u/{i}", "postal_address": world.settings.postal_address,
                     "sender": "Relance", "preheader": "", "scenario": SCENARIO, "step_id": "send-guide"} for i in range(n)]
        world.templates.render(template, subject=subject, context=contexts[0])  # compile outside the clock
        with Stopwatch() as watch:
            rendered = [world.templates.render(template, subject=subject, context=c) for c in contexts]
        world.engine.dispose()
    assert len({r.html for r in rendered}) == n and all(r.text and r.subject for r in rendered), "floor: renders differ per lead"
    return {"emails": n, "seconds": round(watch.seconds, 3), "per_s": rate(n, watch.seconds)}


def _engine_round(work: Path, backend: str, n: int) -> dict:
    with database(backend, work) as url:
        world = open_world(url, work)
        seed(world, due={NOW: n})
        transport = NullTransport()
        with Stopwatch() as watch:
            report = run_tick_inline(world.engine, world.settings, scenario=SCENARIO, now=NOW, workspace=world.workspace,
                                     transport=transport, templates=world.templates, standing=False)
        written = sent_rows(world)
        world.engine.dispose()
    assert report.sent == transport.count == written == n, f"engine/{backend}: {report.sent} sent, {written} rows, wanted {n}"
    return {"emails": n, "seconds": round(watch.seconds, 3), "per_s": rate(n, watch.seconds), "batches": report.batches}
