"""Several workers at once never enroll a lead twice nor send an email twice (real processes, both backends)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from relance.plans import sync_scenarios
from relance.store.tables import Enrollment, Event, Lead
from relance.workspace import load_workspace

from harness import FULL, add_leads, emails_per_lead_and_step, environment, files_sent, finish, start
from tests.units import committed

LEADS = 20_000 if FULL else 800


def _enrollments_per_lead(engine, scenario: str) -> Counter:
    with Session(engine) as session:
        return Counter(session.execute(select(Enrollment.lead_id).where(Enrollment.scenario == scenario)).scalars())


def test_four_concurrent_ticks_enroll_and_mail_each_lead_once(engine, settings, clock, tmp_path):
    committed(engine, sync_scenarios, now=clock.now(), workspace=load_workspace(settings))
    emails = add_leads(engine, clock.now(), LEADS)
    folders = [tmp_path / f"outbox-{i}" for i in range(8)]
    for day, workers in ((0, folders[:4]), (1, folders[4:])):  # day 0: enter + first email; day 1: second email
        now = (clock.now() + timedelta(days=day, minutes=1)).isoformat()
        reports = finish([start(settings, folder, "tick", "drip", now, "200") for folder in workers])
        # a worker may send what another wrote (its leftovers): together they sent each email once
        assert sum(r["sent"] + r["leftovers"] for r in reports) == LEADS, reports
    per_lead = _enrollments_per_lead(engine, "drip")
    assert len(per_lead) == LEADS and set(per_lead.values()) == {1}, f"{sum(per_lead.values())} enrollments for {LEADS} leads"
    sent = emails_per_lead_and_step(engine)
    assert set(sent.values()) == {1} and len(sent) == 2 * LEADS  # one email per lead per send step
    reached = files_sent(*folders)
    assert sum(reached.values()) == 2 * LEADS and set(reached.values()) == {1}  # and each reached the transport once
    assert set(emails) == {to for to, _ in sent}


def test_events_ingested_while_ticks_run_enroll_each_lead_once(engine, settings, clock, tmp_path):
    """Two ingesters post the same downloads (a retried webhook, a replayed queue) while two ticks run."""
    committed(engine, sync_scenarios, now=clock.now(), workspace=load_workspace(settings))
    n = LEADS // 3
    emails = add_leads(engine, clock.now(), n)
    events = tmp_path / "events.json"
    at = clock.now().isoformat()
    events.write_text(json.dumps([{"type": "downloaded", "email": e, "at": at, "properties": {"asset": "guide"}} for e in emails]))
    folders = [tmp_path / f"outbox-{i}" for i in range(6)]
    now = (clock.now() + timedelta(minutes=1)).isoformat()
    workers = [start(settings, folders[0], "ingest", str(events), at), start(settings, folders[1], "ingest", str(events), at)]
    workers += [start(settings, folders[2], "tick", "guide", now, "100"), start(settings, folders[3], "tick", "guide", now, "100")]
    results = finish(workers)
    assert results[0]["stored"] + results[1]["stored"] == n  # each event stored once
    finish([start(settings, folders[4], "tick", "guide", now), start(settings, folders[5], "tick", "guide", now)])
    per_lead = _enrollments_per_lead(engine, "guide")
    assert len(per_lead) == n and set(per_lead.values()) == {1}
    sent = emails_per_lead_and_step(engine)
    assert set(sent.values()) == {1} and len(sent) == n
    reached = files_sent(*folders)
    assert sum(reached.values()) == n and set(reached.values()) == {1}
    with Session(engine) as session:
        assert session.execute(select(func.count()).select_from(Event)).scalar() == n
        assert session.execute(select(func.count()).select_from(Lead)).scalar() == n


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """One Prefect API for the `relance tick` processes, as production runs several workers against one server."""
    from relance.prefect_api import LocalAPI

    home = tmp_path_factory.mktemp("prefect-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("PREFECT_HOME", str(home))
    patch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    api = LocalAPI().start()
    try:
        yield api.wait_ready()
    finally:
        api.stop()
        patch.undo()


def test_four_relance_tick_commands_at_once_mail_each_lead_once(engine, settings, clock, tmp_path, prefect_server):
    """The production reproduction itself: four `relance tick` processes (each its own Prefect flow run) at
    once, over the same due leads, against one Prefect server."""
    import subprocess

    committed(engine, sync_scenarios, now=clock.now(), workspace=load_workspace(settings))
    n = LEADS if FULL else 300
    add_leads(engine, clock.now(), n)
    folders = [tmp_path / f"cli-outbox-{i}" for i in range(4)]
    now = (clock.now() + timedelta(minutes=1)).isoformat()
    commands = [subprocess.Popen([sys.executable, "-m", "relance.cli", "tick", "drip", "--now", now],
                                 env=environment(settings, folder, PREFECT_API_URL=prefect_server),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for folder in folders]
    outputs = [c.communicate(timeout=600)[0] for c in commands]
    assert [c.returncode for c in commands] == [0] * 4, "\n".join(o[-2000:] for o in outputs)
    per_lead = _enrollments_per_lead(engine, "drip")
    assert len(per_lead) == n and set(per_lead.values()) == {1}, f"{sum(per_lead.values())} enrollments for {n} leads"
    reached = files_sent(*folders)
    assert sum(reached.values()) == n and set(reached.values()) == {1}
