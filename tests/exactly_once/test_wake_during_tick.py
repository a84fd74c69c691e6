"""An event an enrollment waits for wakes it, whether it arrived before, during or after the tick that put it to sleep."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select
from sqlmodel import Session

from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.store.tables import Outbox
from relance.tick import run_tick_inline
from relance.workspace import load_workspace

from harness import FULL, add_leads, finish, start
from tests.units import committed

LEADS = 6_000 if FULL else 800


def test_downloads_posted_while_a_tick_runs_wake_the_leads_it_puts_to_sleep(engine, settings, clock, tmp_path):
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    emails = add_leads(engine, clock.now(), LEADS)
    for start_at in range(0, LEADS, 500):
        committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("downloaded", e, clock.now(), {"asset": "guide"})
                                        for e in emails[start_at:start_at + 500]], now=clock.now())
    # the case study is downloaded by everyone while the tick that sends the guide runs (stamped a little later)
    later = clock.now() + timedelta(seconds=30)
    events = tmp_path / "case.json"
    events.write_text(json.dumps([{"type": "downloaded", "email": e, "at": later.isoformat(), "properties": {"asset": "case"}}
                                  for e in reversed(emails)]))
    finish([start(settings, tmp_path / "out-a", "tick", "guide", clock.now().isoformat(), "100"),
            start(settings, tmp_path / "out-b", "ingest", str(events), later.isoformat())])
    # a minute later every lead has moved on to the thank-you email; none waits out its 7 days
    report = run_tick_inline(engine, settings, scenario="guide", now=clock.now() + timedelta(minutes=1), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    with Session(engine) as session:
        thanked = set(session.execute(select(Outbox.to_address).where(Outbox.step_id == "got-case")).scalars())
    assert len(thanked) == LEADS, f"{LEADS - len(thanked)} leads missed the download they waited for ({report.as_dict()})"
