"""A deployed flow run by a worker whose RELANCE_* cannot be used: the run ends Failed with the one sentence the
command line prints (naming the setting and what to do), logged once as an error, no traceback, nothing stored.

Real flow runs on relance's local Prefect API, each bad setting of the settings corpus, on both backends."""

from __future__ import annotations

import importlib

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from typer.testing import CliRunner

from relance.cli import app
from relance.settings import get_settings
from relance.store.repo import upsert_lead
from sqlmodel import Session
from tests.corpus.test_settings_corpus import SETTINGS, _rows
from tests.basis import professional

FLOWS = {  # (module, flow, parameters)
    "tick": ("relance.flows.tick", "tick", {"scenario": "whitepaper-nurture", "now": "2026-03-02T09:00:00+00:00"}),
    "decay": ("relance.flows.housekeeping", "decay", {"now": "2026-03-02T09:00:00+00:00"}),
    "sla": ("relance.flows.housekeeping", "sla", {"now": "2026-03-02T09:00:00+00:00"}),
    "reengage": ("relance.flows.housekeeping", "reengage", {"now": "2026-03-02T09:00:00+00:00"}),
    "ses-events": ("relance.flows.ses_events", "ses_events", {"queue_url": "http://127.0.0.1:9/000000000000/ses"}),
}
EVERY_FLOW = {"transport-pigeon", "database-unreachable", "scenarios-dir-missing"}  # the others: the tick only
CASES = [pytest.param(variables, flow, id=f"{setting}-{flow}") for setting, variables, _ in SETTINGS for flow in FLOWS
         if flow == "tick" or setting in EVERY_FLOW]


@pytest.fixture
def stored(env, engine, clock):
    """The env project's database with one lead in it; the rows of each table, to compare after a refused run."""
    with Session(engine) as session:
        upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa", fields=professional())
        session.commit()
    return _rows(engine)


def _logs(flow_run_id) -> list:
    APILogWorker.drain_all(timeout=10)  # the run's logs reach the API in the background
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


@pytest.mark.parametrize("variables, flow", CASES)
def test_a_flow_run_with_a_setting_it_cannot_use_fails_with_the_sentence_and_no_traceback(env, engine, stored, monkeypatch,
                                                                                          variables, flow):
    for key, value in variables.items():
        monkeypatch.setenv(key, value.format(tmp=env))
    get_settings.cache_clear()
    said = CliRunner().invoke(app, ["report"]).stderr.strip()  # what the command line says of the same setup
    assert said.startswith("error: ") and "\n" not in said, said
    module, name, parameters = FLOWS[flow]

    state = getattr(importlib.import_module(module), name)(**parameters, return_state=True)

    assert state.is_failed()
    assert state.message == said.removeprefix("error: ")
    logs = _logs(state.state_details.flow_run_id)
    assert [log.message for log in logs if log.level >= 40] == [state.message]  # said once, as an error
    assert not [log.message for log in logs if "Traceback" in log.message or "Error:" in log.message]
    assert _rows(engine) == stored


@pytest.mark.parametrize("flow", ["tick", "sla", "reengage"])
def test_a_flow_that_signs_links_or_sends_mail_refuses_a_guessable_key(env, engine, stored, monkeypatch, flow):
    monkeypatch.setenv("RELANCE_SECRET_KEY", "change-me")
    get_settings.cache_clear()
    said = CliRunner().invoke(app, ["tick"] if flow == "tick" else ["flow", flow])
    module, name, parameters = FLOWS[flow]

    state = getattr(importlib.import_module(module), name)(**parameters, return_state=True)

    assert state.is_failed()
    assert state.message.startswith("setting RELANCE_SECRET_KEY cannot sign links: it is the default 'change-me'")
    assert state.message == said.stderr.strip().removeprefix("error: ")  # as the command line says it
    logs = _logs(state.state_details.flow_run_id)
    assert [log.message for log in logs if log.level >= 40] == [state.message]
    assert _rows(engine) == stored
