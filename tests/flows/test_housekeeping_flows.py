"""`relance flow decay`, `sla`, `reengage`: the housekeeping flows run through Prefect, on an injected time."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import Session
from typer.testing import CliRunner

from relance.cli import app
from relance.ingest import IncomingEvent, ingest_events
from relance.leads import lead_summary
from relance.plans import open_store
from relance.scoring.config import ScoringConfig
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from relance.workspace import Workspace, load_scoring
from tests.units import committed

ROOT = Path(__file__).resolve().parents[2]


def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC, limit=1)[0]


def test_relance_flow_decay_fades_an_idle_score_once(prefect_home, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    monkeypatch.setenv("RELANCE_DATABASE_URL", url)
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(ROOT / "scenarios"))
    get_settings.cache_clear()
    engine = open_store(Settings())
    start = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
    with Session(engine) as session:
        upsert_lead(session, email="lea@acme.example", now=start)
        session.commit()
    workspace = Workspace(scoring=load_scoring(ROOT / "scenarios"))
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("demo_requested", "lea@acme.example", start, {})], now=start)

    for _ in range(2):
        result = CliRunner().invoke(app, ["flow", "decay", "--now", "2026-02-10T09:00:00+00:00"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert "0 idle lead(s)" in result.output  # the second run finds nothing new to decay
    assert committed(engine, lead_summary, email="lea@acme.example", scoring=ScoringConfig())["score"] == 50 - 12
    get_settings.cache_clear()


def test_relance_flow_sla_and_reengage_run_as_flows(prefect_home, tmp_path, monkeypatch):
    from relance.sales import open_handoff

    monkeypatch.setenv("RELANCE_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(ROOT / "scenarios"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(ROOT / "templates" / "emails"))
    get_settings.cache_clear()
    engine = open_store(Settings())
    start = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
    with Session(engine) as session:
        lead = upsert_lead(session, email="lea@acme.example", now=start)
        open_handoff(session, lead, scoring=load_scoring(ROOT / "scenarios"), now=start, source="test")
        session.commit()
    result = CliRunner().invoke(app, ["flow", "sla", "--now", "2026-01-08T09:00:00+00:00"], catch_exceptions=False)
    assert "1 newly past deadline" in result.output
    assert "Account at 2026-01-08 09:00 UTC: 1 leads, 1 MQL and 0 SQL reached this week, 1 hand-offs waiting, 1 SLA breaches" in (
        _artifact("account-overview").description)  # the SLA flow refreshes the overview (handed off on Monday: an MQL)
    result = CliRunner().invoke(app, ["flow", "reengage", "--now", "2026-01-08T09:00:00+00:00"], catch_exceptions=False)
    assert "reengage: 0 lead(s) enrolled" in result.output
    get_settings.cache_clear()
