"""An event that makes work due now is announced to Prefect (so the scenario's tick runs within seconds), on both
backends; one that makes nothing due is not; a Prefect server out of reach never costs the event."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi.testclient import TestClient

from relance.api.app import create_app
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.prefect_adapter import Announcer
from relance.settings import Settings
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
TOKEN = "announce-test-token-0123456789"
SCENARIO = """\
scenario: waiter
trigger: {event: form_submitted}
steps:
  - id: wait-download
    wait_until: {event: downloaded}
    timeout: 7d
    on_timeout: done
  - id: bump
    score: +5
  - id: done
    end: true
"""


def _setup(tmp_path: Path, db_url: str):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    shutil.copy(ROOT / "scenarios" / "scoring.yaml", folder)
    (folder / "waiter.yaml").write_text(SCENARIO, encoding="utf-8")
    settings = Settings(database_url=db_url, scenarios_dir=folder, templates_dir=ROOT / "templates" / "emails",
                        transport="null", api_token=TOKEN)
    return settings, load_workspace(settings)


def _ingest(engine, workspace, type_: str, at: datetime, **properties):
    return committed(engine, ingest_events, workspace=workspace, now=at,
                     events=[IncomingEvent(type_, "lea@acme.example", at, properties)])


def test_what_an_event_makes_due_now_is_counted_by_scenario(tmp_path: Path, engine, db_url: str) -> None:
    settings, workspace = _setup(tmp_path, db_url)
    committed(engine, sync_scenarios, workspace=workspace, now=T0)
    assert _ingest(engine, workspace, "form_submitted", T0).due == {"waiter": 1}  # enrolled, due now
    run_tick_inline(engine, settings, scenario="waiter", now=T0, workspace=workspace,
                    templates=TemplateLibrary(settings.templates_dir))  # now it waits for a download
    later = T0 + timedelta(hours=1)
    assert _ingest(engine, workspace, "page_visited", later, url="/blog").due == {}  # not what it waits for
    assert _ingest(engine, workspace, "downloaded", later + timedelta(minutes=1), asset="x").due == {"waiter": 1}


def test_the_api_announces_after_the_commit_and_a_server_out_of_reach_costs_only_a_warning(
        tmp_path: Path, engine, db_url: str, monkeypatch, caplog) -> None:
    settings, workspace = _setup(tmp_path, db_url)
    committed(engine, sync_scenarios, workspace=workspace, now=T0)
    heard: list[tuple[dict, str]] = []
    client = TestClient(create_app(settings, engine=engine, workspace=workspace,
                                   announce=lambda due, *, channel: heard.append((due, channel))))
    body = {"type": "form_submitted", "email": "lea@acme.example", "properties": {"basis": "legitimate_interest"}}
    answer = client.post("/events", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json()["enrolled"] == 1
    assert heard == [({"waiter": 1}, "api")]

    announce = Announcer(api_url="http://127.0.0.1:9/api")  # nothing listens on the discard port
    client = TestClient(create_app(settings, engine=engine, workspace=workspace, announce=announce))
    with caplog.at_level(logging.WARNING, logger="relance.announce"):
        body = {"type": "form_submitted", "email": "ben@acme.example", "properties": {"basis": "legitimate_interest"}}
        answer = client.post("/events", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json() == {"stored": 1, "duplicates": 0, "enrolled": 1, "woken": 0}
    [warning] = [r.getMessage() for r in caplog.records if r.name == "relance.announce"]
    assert warning.startswith("could not ask Prefect at http://127.0.0.1:9/api to tick waiter now (")
    assert warning.endswith("the next scheduled tick will do the work")
