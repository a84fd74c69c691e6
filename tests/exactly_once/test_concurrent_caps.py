"""Ticks of different scenarios, in processes of their own at the same moment, mailing the same leads: sending.yaml's
cap holds across them (both backends). Without the lock on the lead, two workers both count 0 emails today and
both send (seen: 2-3 emails per lead on PostgreSQL).

`make test` runs 3 leads; `RELANCE_TEST_FULL=1 make test PYTEST_ARGS=tests/exactly_once/test_concurrent_caps.py` 30.
"""

from __future__ import annotations

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

LEADS = 30 if FULL else 3
DECIDE = 1.5  # seconds
CAMPAIGN = """\
scenario: {name}
priority: {priority}
trigger: {{segment: {{stage_in: [lead]}}}}
steps:
  - id: mail
    send: hello
    subject: "{name}"
"""


def test_three_scenarios_ticking_at_once_on_several_workers_send_each_lead_one_email_a_day(engine, settings, clock, tmp_path):
    for old in settings.scenarios_dir.glob("*.yaml"):
        old.unlink()
    (settings.scenarios_dir / "sending.yaml").write_text("caps: [{emails: 1, per: 1d}]\n", encoding="utf-8")
    for name, priority in (("alpha", 70), ("beta", 50), ("gamma", 30)):
        (settings.scenarios_dir / f"{name}.yaml").write_text(CAMPAIGN.format(name=name, priority=priority), encoding="utf-8")
    committed(engine, sync_scenarios, now=clock.now(), workspace=load_workspace(settings))
    emails = add_leads(engine, clock.now(), LEADS)
    folders = [tmp_path / f"outbox-{i}" for i in range(4)]
    now = (clock.now() + timedelta(minutes=1)).isoformat()
    # Each decision takes DECIDE seconds between counting the lead's sends and claiming the email, and the scenario
    # of the highest priority starts a little later: its emails are written and counted while the others are deciding
    # theirs. Without the lock on the lead, both count 0 today and both send (this test then fails).
    workers = []
    for folder, name in zip(folders, ("gamma", "beta", "beta", "alpha")):
        workers.append(start(settings, folder, "tick", name, now, "50", WORKER_DECIDE_DELAY=str(DECIDE)))
        time.sleep(DECIDE / 3 if name == "beta" else 0)
    finish(workers)

    with Session(engine) as session:
        rows = session.execute(select(Outbox.to_address, Outbox.status, Outbox.held)).all()
    sent = Counter(to for to, status, _ in rows if status == "sent")
    assert set(sent) == set(emails) and set(sent.values()) == {1}, Counter(sent.values())
    assert sum(files_sent(*folders).values()) == LEADS  # and one file each reached the transport
    waiting = [held for _, status, held in rows if status == "pending"]
    assert len(waiting) == 2 * LEADS and set(waiting) == {"cap: 1 per 1d"}

    tomorrow = (clock.now() + timedelta(days=1, minutes=2)).isoformat()
    finish([start(settings, folder, "tick", name, tomorrow, "50") for folder, name in zip(folders, ("gamma", "alpha"))])
    with Session(engine) as session:
        rows = session.execute(select(Outbox.to_address, Outbox.status)).all()
    assert Counter(to for to, status in rows if status == "sent") == Counter({e: 2 for e in emails})
