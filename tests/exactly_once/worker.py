"""A tick or an ingestion in a process of its own, for the concurrency and crash tests.

    python tests/exactly_once/worker.py tick SCENARIO NOW [BATCH]
    python tests/exactly_once/worker.py ingest EVENTS.json NOW

Settings come from the environment (RELANCE_*), as for `relance tick`. It runs the same
functions as the tick flow's tasks, without a Prefect server (the concurrency under test is the
database's). Prints the tick's counts as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime

from sqlmodel import Session

from relance.email.templates import TemplateLibrary
from relance.email.transports import make_transport
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import open_store
from relance.settings import Settings
from relance.tick import run_tick_inline
from relance.workspace import load_workspace


class _Slow:
    def __init__(self, transport, delay: float) -> None:
        self.transport, self.delay = transport, delay

    def send(self, email):
        time.sleep(self.delay)
        return self.transport.send(email)


def _slow_decisions(delay: float) -> None:
    """Widen the moment between counting a lead's sends and claiming the email (the caps test): a race there,
    without the lock on the lead, sends twice."""
    import relance.gate

    decide = relance.gate.hold

    def slowly(*args, **kwargs):
        time.sleep(delay)
        return decide(*args, **kwargs)

    relance.gate.hold = slowly


def main(argv: list[str]) -> None:
    settings = Settings()
    if os.environ.get("WORKER_DECIDE_DELAY"):
        _slow_decisions(float(os.environ["WORKER_DECIDE_DELAY"]))
    engine = open_store(settings)
    workspace = load_workspace(settings)
    if argv[0] == "tick":
        now = datetime.fromisoformat(argv[2])
        transport = make_transport(settings)
        if os.environ.get("WORKER_SEND_DELAY"):  # the crash test kills it mid-send: give each send a little time
            transport = _Slow(transport, float(os.environ["WORKER_SEND_DELAY"]))
        print("ready", flush=True)
        report = run_tick_inline(engine, settings, scenario=argv[1], now=now, workspace=workspace, transport=transport,
                                 batch_size=int(argv[3]) if len(argv) > 3 else None, templates=TemplateLibrary(settings.templates_dir))
        print(json.dumps(report.as_dict()))
    elif argv[0] == "ingest":
        now = datetime.fromisoformat(argv[2])
        events = [IncomingEvent(e["type"], e["email"], datetime.fromisoformat(e["at"]), e.get("properties", {}), e.get("key"))
                  for e in json.loads(open(argv[1]).read())]
        stored = 0
        for start in range(0, len(events), 100):
            with Session(engine) as session:  # this process owns each batch's transaction
                stored += ingest_events(session, workspace=workspace, events=events[start:start + 100], now=now).stored
                session.commit()
        print(json.dumps({"stored": stored}))
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
