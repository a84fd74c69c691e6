"""What an operator reads in a flow run's log: relance's own errors as their sentence, without a stack trace;
an unexpected error (a bug) keeps its traceback."""

from __future__ import annotations

import io
import logging
import socket
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from relance.delivery import RetryableDelivery
from relance.flows.logs import RUN_LOGGERS, _drop_said_traceback, said_without_traceback
from relance.plans import open_store
from relance.settings import Settings
from relance.store.repo import upsert_lead
import relance.tasks.deliver
from relance.tick import TickError
from tests.basis import professional
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).parent))
from test_tick_flow import NOW, TEMPLATE, WELCOME  # noqa: E402


class RefusesForNow:
    """An SMTP server that answers every recipient `451 Try again later`, as a greylisting one does."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "451 4.7.1 Greylisted, try again later"


@pytest.fixture
def log() -> io.StringIO:
    """The text Prefect's run loggers write, formatted as a handler would (a traceback shows if one is attached)."""
    said_without_traceback()
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for name in RUN_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield text
    for name in RUN_LOGGERS:
        logging.getLogger(name).removeHandler(handler)


def test_a_delivery_refused_for_now_is_one_sentence_in_the_flow_log_not_a_stack_trace(tmp_path, prefect_home, monkeypatch, log):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Controller(RefusesForNow(), hostname="127.0.0.1", port=port)
    server.start()
    try:
        (tmp_path / "scenarios").mkdir()
        (tmp_path / "templates").mkdir()
        (tmp_path / "scenarios" / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
        (tmp_path / "templates" / "hello.mjml").write_text(TEMPLATE, encoding="utf-8")
        for name, value in {"RELANCE_DATABASE_URL": f"sqlite:///{tmp_path / 'relance.db'}",
                            "RELANCE_SCENARIOS_DIR": str(tmp_path / "scenarios"), "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"),
                            "RELANCE_TRANSPORT": "smtp", "RELANCE_SMTP_HOST": "127.0.0.1",
                            "RELANCE_SMTP_PORT": str(port)}.items():
            monkeypatch.setenv(name, value)
        engine = open_store(Settings())
        with Session(engine) as session:
            upsert_lead(session, email="lea@acme.example", now=NOW, first_name="Léa", fields=professional())
            session.commit()
        engine.dispose()
        monkeypatch.setattr(relance.tasks.deliver.deliver_batch, "retry_delay_seconds", [0, 0, 0])  # the retries, not their wait
        from relance.flows.tick import tick

        with pytest.raises(TickError, match="emails not delivered yet, they stay pending for the next tick"):
            tick(scenario="welcome", now=NOW.isoformat())
    finally:
        server.stop()

    said = log.getvalue()
    assert "Greylisted, try again later" in said and "Retries are exhausted" in said
    assert "ERROR welcome: emails not delivered yet, they stay pending for the next tick: batch 1 (1 emails of step hello 1)" in said
    assert "Finished in state Failed('welcome: emails not delivered yet" in said  # the run's state message says it too
    assert "Traceback" not in said


def _record(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())


def test_only_relance_s_own_errors_lose_their_traceback():
    said, bug = _record(RetryableDelivery("2 message(s) could not be delivered yet")), _record(KeyError("step_id"))
    assert _drop_said_traceback(said) and _drop_said_traceback(bug)  # both logged
    assert said.exc_info is None
    assert bug.exc_info is not None and "Traceback" in logging.Formatter().format(bug)
