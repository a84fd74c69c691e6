"""What the exactly-once tests share: scenarios, leads in bulk, processes that tick or ingest, counts.

Sizes are small in `make test`; `RELANCE_TEST_FULL=1` runs them at the sizes the issue measured
(20,000 leads, 30 kills per backend): `RELANCE_TEST_FULL=1 make test PYTEST_ARGS=tests/exactly_once`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, select
from sqlmodel import Session

from relance.settings import Settings
from relance.store.tables import Lead, Outbox
from tests.basis import professional

FULL = os.environ.get("RELANCE_TEST_FULL") == "1"
WORKER = Path(__file__).with_name("worker.py")

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}, voici {{ scenario }}/{{ step_id }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""

# every lead in stage `lead` enters (a segment: each tick checks every lead), gets two emails a day apart
DRIP = """\
scenario: drip
trigger: {segment: {stage_in: [lead]}}
steps:
  - id: first
    send: hello
    subject: "{{ lead.first_name }}, bienvenue"
  - id: pause
    wait: 1d
  - id: second
    send: hello
    subject: "{{ lead.first_name }}, la suite"
"""

# a download enrolls; the lead then waits for the case study, at most 7 days
GUIDE = """\
scenario: guide
trigger: {event: downloaded, where: {asset: guide}}
steps:
  - id: send-guide
    send: hello
    subject: "Votre guide"
  - id: wait-case
    wait_until: {event: downloaded, where: {asset: case}}
    timeout: 7d
    on_timeout: timed-out
  - id: got-case
    send: hello
    subject: "Merci pour votre lecture"
    next: done
  - id: timed-out
    end: true
  - id: done
    end: true
"""


def environment(settings: Settings, outbox_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker process: the test's settings, its own outbox folder."""
    return {**os.environ, "RELANCE_DATABASE_URL": settings.database_url, "RELANCE_SCENARIOS_DIR": str(settings.scenarios_dir),
            "RELANCE_TEMPLATES_DIR": str(settings.templates_dir), "RELANCE_TRANSPORT": "file",
            "RELANCE_OUTBOX_DIR": str(outbox_dir), **extra}


def start(settings: Settings, outbox_dir: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=environment(settings, outbox_dir, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen], timeout: float = 600) -> list[dict]:
    """Wait for every worker; each must exit 0 (its stderr is shown if not)."""
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, f"worker failed ({process.args}):\n{err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def add_leads(engine, now: datetime, n: int, prefix: str = "lead") -> list[str]:
    """n leads in one INSERT per thousand (as an import would)."""
    emails = [f"{prefix}{i}@acme.example" for i in range(n)]
    with Session(engine) as session:
        for start_at in range(0, n, 1000):
            session.execute(insert(Lead.__table__), [
                Lead(email=e, first_name=f"Léa{i}", company="ACME", created_at=now, updated_at=now, fields=professional()).model_dump(exclude={"id"})
                for i, e in enumerate(emails[start_at:start_at + 1000], start_at)])
        session.commit()
    return emails


def files_sent(*folders: Path) -> Counter:
    """How many times each outbox row reached the file transport, over every worker's folder."""
    return Counter(path.stem for folder in folders if folder.exists() for path in folder.glob("*.eml"))


def emails_per_lead_and_step(engine) -> Counter:
    with Session(engine) as session:
        return Counter((row.to_address, row.step_id) for row in session.execute(
            select(Outbox.to_address, Outbox.step_id).where(Outbox.status == "sent")))
