"""The ses-events flow and `relance ses-events --once`, against a moto SQS queue."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import Session
from typer.testing import CliRunner

from relance.cli import app
from relance.leads import lead_summary
from relance.plans import open_store
from relance.scoring.config import ScoringConfig
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from tests.units import committed

ROOT = Path(__file__).resolve().parents[2]


def _bounce(email: str) -> str:
    event = {"eventType": "Bounce", "mail": {"messageId": "m-1", "destination": [email], "timestamp": "2026-01-05T09:00:00Z"},
             "bounce": {"bounceType": "Permanent", "timestamp": "2026-01-05T09:01:00Z", "bouncedRecipients": [{"emailAddress": email}]}}
    return json.dumps({"Type": "Notification", "Message": json.dumps(event)})


def test_the_flow_and_the_command_drain_the_queue_and_suppress_bounces(prefect_home, sqs, tmp_path, monkeypatch):
    monkeypatch.setenv("RELANCE_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(ROOT / "scenarios"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(ROOT / "templates" / "emails"))
    monkeypatch.setenv("RELANCE_SES_ENDPOINT_URL", sqs.meta.endpoint_url)
    get_settings.cache_clear()
    engine = open_store(Settings())
    with Session(engine) as session:
        for email in ("a@acme.example", "b@acme.example"):
            upsert_lead(session, email=email, now=datetime(2026, 1, 5, tzinfo=timezone.utc))
        session.commit()
    queue = sqs.create_queue(QueueName="ses-flow")["QueueUrl"]

    from relance.flows.ses_events import ses_events

    sqs.send_message(QueueUrl=queue, MessageBody=_bounce("a@acme.example"))
    assert ses_events(queue_url=queue) == {"stored": 1, "duplicates": 0, "suppressed": 1, "set_aside": 0}

    sqs.send_message(QueueUrl=queue, MessageBody=_bounce("b@acme.example"))
    sqs.send_message(QueueUrl=queue, MessageBody="{oops")
    result = CliRunner().invoke(app, ["ses-events", "--queue-url", queue, "--once", "--set-aside-dir", str(tmp_path / "aside")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 stored" in result.output and "1 set aside" in result.output and "set aside:" in result.output
    assert [committed(engine, lead_summary, email=e, scoring=ScoringConfig())["suppressed"] for e in ("a@acme.example", "b@acme.example")] == ["bounced", "bounced"]
    assert len(list((tmp_path / "aside").glob("*.json"))) == 1
    sqs.delete_queue(QueueUrl=queue)
    get_settings.cache_clear()


def test_a_queue_that_does_not_exist_fails_the_run_with_the_sentence_after_the_retries(prefect_home, sqs, tmp_path, monkeypatch):
    import relance.flows.ses_events as module
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    monkeypatch.setenv("RELANCE_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(ROOT / "scenarios"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(ROOT / "templates" / "emails"))
    monkeypatch.setenv("RELANCE_SES_ENDPOINT_URL", sqs.meta.endpoint_url)
    monkeypatch.setattr(module, "drain_task", module.drain_task.with_options(retry_delay_seconds=0))  # the retries, at once
    queue = sqs.meta.endpoint_url + "/123456789012/no-such-queue"

    state = module.ses_events(queue_url=queue, return_state=True)

    assert state.is_failed()
    assert state.message.startswith(f"the SQS queue {queue} does not exist: check the queue URL (--queue-url)")
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    tries = [log.message for log in logs if log.message.startswith("Task run failed with state: Failed(")]
    assert len(tries) == 3 and all(state.message in said for said in tries)  # the first try and two retries
    assert all(state.message in log.message for log in logs if log.level >= 40)
    assert not [log.message for log in logs if "Traceback" in log.message]
