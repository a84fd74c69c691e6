"""`notify: {webhook: URL}` against a real local HTTP server: posted once, signed, retried only when it may help."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import select
from sqlmodel import Session

from relance.policy import NO_POLICY
from relance.advancing import advance_due
from relance.delivery import RetryableDelivery, deliver
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Outbox
from relance.webhooks import signature
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import professional

HOOKED = """\
scenario: hooked
trigger: {event: demo_requested}
steps:
  - id: tell-crm
    notify: {webhook: "%s/hooks/lead"}
"""


class Receiver:
    """A CRM's endpoint: records each call and answers with the next status in line (200 when none left)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, dict]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), json.loads(body)))
                receiver.raw = body
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"busy" if status >= 500 else b"")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, receiver: Receiver) -> Settings:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "scenarios" / "hooked.yaml").write_text(HOOKED % receiver.url, encoding="utf-8")
    return Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                    outbox_dir=tmp_path / "outbox", transport="null", secret_key="s3cret",
                    webhook_allow="127.0.0.1")  # the receiver runs on this machine


def _request_demo(engine, settings, clock, email: str) -> list[int]:
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        upsert_lead(session, email=email, now=clock.now(), first_name="Léa", company="ACME", fields=professional())
        session.commit()
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("demo_requested", email, clock.now())], now=clock.now())
    return advance_due(engine, settings, scenario="hooked", now=clock.now(), workspace=workspace).outbox_ids


def test_a_webhook_posts_the_lead_once_signed_and_with_an_idempotency_key(engine, settings, clock, receiver):
    ids = _request_demo(engine, settings, clock, "lea@acme.example")
    assert deliver(engine, settings, outbox_ids=ids, now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY).sent == 1
    assert deliver(engine, settings, outbox_ids=ids, now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY).sent == 0  # a replayed batch posts nothing
    [(headers, body)] = receiver.calls
    assert body["lead"]["email"] == "lea@acme.example" and body["lead"]["company"] == "ACME"
    assert (body["scenario"], body["step_id"]) == ("hooked", "tell-crm")
    assert headers["Idempotency-Key"] == f"relance-outbox-{ids[0]}"
    assert headers["X-Relance-Signature"] == signature("s3cret", receiver.raw)


def test_a_busy_receiver_is_tried_again_and_a_refusal_is_kept_with_its_reason(engine, settings, clock, receiver):
    receiver.statuses = [503]
    ids = _request_demo(engine, settings, clock, "lea@acme.example")
    with pytest.raises(RetryableDelivery, match="answered 503: busy"):
        deliver(engine, settings, outbox_ids=ids, now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY)
    assert deliver(engine, settings, outbox_ids=ids, now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY).sent == 1  # the retry Prefect would make
    assert len(receiver.calls) == 2

    receiver.statuses = [422]
    refused = _request_demo(engine, settings, clock, "karim@initech.example")
    assert deliver(engine, settings, outbox_ids=refused, now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY).failed == 1
    with Session(engine) as session:
        row = session.exec(select(Outbox).where(Outbox.id == refused[0])).scalars().one()
    assert (row.status, row.error) == ("failed", f"webhook {receiver.url}/hooks/lead answered 422")
