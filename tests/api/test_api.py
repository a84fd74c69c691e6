"""The HTTP API through a real app and a real database (both backends)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session

from relance.api.app import create_app
from relance.email.templates import TemplateLibrary
from relance.email.tracking import sign
from relance.email.transports import FileTransport
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Event, Lead
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import professional

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-of-the-tests"
SERVER_KEY = "key-of-the-served-api-0123456789-abcdef"


@pytest.fixture
def world(engine, clock, tmp_path, db_url):
    """One lead who got the white-paper email through the shipped scenario, and the API over it."""
    settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key="k" * 32, public_url="https://t.relance.example",
                        api_token=TOKEN)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa", company="ACME\r\nBcc: x@y.z", fields=professional())
        session.commit()
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("downloaded", "lea@acme.example", clock.now(), {"asset": "livre-blanc-leads"})], now=clock.now())
    run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.now(), workspace=workspace,
                    transport=FileTransport(settings.outbox_dir), templates=TemplateLibrary(settings.templates_dir))
    [eml] = list(settings.outbox_dir.glob("*.eml"))
    message = message_from_bytes(eml.read_bytes(), policy=default)
    client = TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock))
    return client, message, engine


def _html(message) -> str:
    return next(p.get_content() for p in message.iter_parts() if p.get_content_type() == "text/html")


def _events(engine, type_):
    with Session(engine) as session:
        return session.exec(select(Event).where(Event.type == type_)).scalars().all()


def _lead(engine):
    with Session(engine) as session:
        return session.exec(select(Lead).where(Lead.email == "lea@acme.example")).scalars().one()


def test_every_email_carries_one_click_unsubscribe_tracked_links_a_pixel_and_the_postal_address(world):
    _, message, _ = world
    assert message["List-Unsubscribe"].startswith("<https://t.relance.example/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = _html(message)
    assert "https://t.relance.example/c/" in html and "https://t.relance.example/o/" in html
    assert "https://relance.example/ressources" not in html  # every content link goes through the tracker
    assert "rue de la Paix" in html
    for name, value in message.items():
        assert "\n" not in value.strip() or name in ("Subject",)


def test_a_click_is_recorded_scored_and_redirected_to_the_link_of_the_email(world, clock):
    client, message, engine = world
    link = re.search(r'href="(https://t\.relance\.example/c/[^"]+)"', _html(message)).group(1)
    clock.advance(timedelta(minutes=1))  # read, then clicked: a click seconds after the sending is a scanner's
    response = client.get(link.removeprefix("https://t.relance.example"), follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"].startswith("https://relance.example/")
    [click] = _events(engine, "email_clicked")
    assert click.properties["scenario"] == "whitepaper-nurture" and click.properties["step_id"] == "send-guide"
    assert _lead(engine).score == 5 + 3  # the white-paper download, then the click


def test_the_open_pixel_records_an_open_and_scores_only_the_first(world, clock):
    client, message, engine = world
    pixel = re.search(r'src="https://t\.relance\.example(/o/[^"]+)"', _html(message)).group(1)
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        response = client.get(pixel)
        assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    assert len(_events(engine, "email_opened")) == 3
    assert _lead(engine).score == 5 + 1


def test_forged_or_altered_tokens_get_404_and_record_nothing(world):
    client, message, engine = world
    link = re.search(r'href="https://t\.relance\.example(/c/[^"]+)"', _html(message)).group(1)
    body, signature = link.removeprefix("/c/").split(".")
    forged = sign("wrong-secret", kind="c", outbox_id=1, lead_id=1, email="lea@acme.example", link="https://evil.example")
    for path in (f"/c/{body}x.{signature}", f"/c/{forged}", "/c/garbage", f"/o/{forged}.gif", f"/u/{forged}"):
        assert client.get(path, follow_redirects=False).status_code == 404
    assert _events(engine, "email_clicked") == [] and _events(engine, "email_opened") == []


def test_one_click_unsubscribe_by_post_is_immediate_and_idempotent_and_get_shows_a_button(world):
    client, message, engine = world
    path = message["List-Unsubscribe"].strip("<>").removeprefix("https://t.relance.example")
    page = client.get(path)
    assert page.status_code == 200 and "<form method=post" in page.text and "Me désinscrire" in page.text
    for _ in range(2):
        response = client.post(path, content="List-Unsubscribe=One-Click",
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200 and "désinscrit" in response.text
    assert _lead(engine).suppressed == "unsubscribed"
    assert len(_events(engine, "unsubscribed")) == 1
    assert client.post(path, content="nothing").status_code == 400


def test_an_unsubscribe_ends_the_scenario_at_its_next_step(world, clock, tmp_path):
    client, message, engine = world
    path = message["List-Unsubscribe"].strip("<>").removeprefix("https://t.relance.example")
    client.post(path, content="List-Unsubscribe=One-Click")
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)), scenarios_dir=ROOT / "scenarios",
                        templates_dir=ROOT / "templates" / "emails", transport="null")
    report = run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.advance(timedelta(days=4)),
                             workspace=load_workspace(settings), templates=TemplateLibrary(settings.templates_dir))
    assert report.sent == 0 and report.counts[("pause", "exited")] == 1


def _post(client, body, token=TOKEN):
    return client.post("/events", json=body, headers={"Authorization": f"Bearer {token}"})


def test_events_need_the_bearer_token(world):
    client, _, _ = world
    assert _post(client, {"type": "page_visited", "email": "lea@acme.example"}, token="nope").status_code == 401
    assert client.post("/events", json={"type": "x", "email": "lea@acme.example"}).status_code == 401


def test_a_batch_of_events_is_stored_once_per_idempotency_key(world):
    client, _, engine = world
    batch = [{"type": "page_visited", "email": "lea@acme.example", "properties": {"path": "/tarifs"}, "idempotency_key": "v1"},
             {"type": "demo_requested", "email": "LEA@acme.example", "idempotency_key": "d1"}]
    assert _post(client, batch).json()["stored"] == 2
    assert _post(client, batch).json() == {"stored": 0, "duplicates": 2, "enrolled": 0, "woken": 0}
    assert _lead(engine).score == 5 + 10 + 50


def test_a_form_for_a_new_email_creates_the_lead_with_its_consent_proof(world):
    client, _, engine = world
    body = {"type": "form_submitted", "email": "nouveau@globex.example",
            "properties": {"first_name": "Hugo", "job_title": "Directeur commercial", "source": "webinar"},
            "consent": {"source": "formulaire webinar", "wording": "J'accepte de recevoir des emails de Relance."}}
    assert _post(client, body).status_code == 200
    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == "nouveau@globex.example")).scalars().one()
    assert lead.first_name == "Hugo" and lead.source == "webinar" and lead.fit >= 30
    assert lead.fields["consent"]["wording"] == "J'accepte de recevoir des emails de Relance."
    assert lead.fields["consent"]["at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "Page Visited", "email": "lea@acme.example"}, "type"),
        ({"type": "page_visited", "email": "not-an-email"}, "email"),
        ({"type": "page_visited", "email": "lea@acme.example", "colour": "red"}, "colour"),
        ({"type": "page_visited", "email": "ghost@nowhere.example"}, "email"),
        ({"type": "said_later", "email": "lea@acme.example", "properties": {"until": "banana"}}, "until"),
    ],
)
def test_bad_payloads_get_a_4xx_naming_the_field(world, body, field):
    client, _, engine = world
    response = _post(client, body)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])


def test_a_form_writes_country_sector_and_revenue_as_an_import_would(world):
    client, _, engine = world
    body = {"type": "form_submitted", "email": " Hugo@Globex.example ",
            "properties": {"country": "France", "sector": "SaaS", "company_revenue": "1,5M", "language": "fr_ca",
                           "company": "Globex\r\n  SA", "timezone": "Europe/Paris"}}
    assert _post(client, body).status_code == 200
    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == "hugo@globex.example")).scalars().one()
    assert (lead.country, lead.sector, lead.company_revenue, lead.language, lead.company) == ("FR", "saas", 1_500_000, "fr-CA", "Globex SA")


def test_the_schema_documents_the_event_rules_and_a_batch_error_names_its_place(world):
    client, _, _ = world
    schema = client.get("/openapi.json").json()["components"]["schemas"]["EventIn"]["properties"]
    assert schema["type"]["pattern"] == "^[a-z][a-z0-9_]*$" and schema["type"]["maxLength"] == 64
    assert schema["email"]["maxLength"] == 320 and schema["idempotency_key"]["anyOf"][0]["maxLength"] == 200
    batch = [{"type": "page_visited", "email": "lea@acme.example"}, {"type": "Page-Visited", "email": "lea@acme.example"}]
    [error] = _post(client, batch).json()["detail"]
    assert error["loc"] == ["body", "batch", 1, "type"] and error["msg"] == "'Page-Visited' is not an event type: did you mean page_visited?"


def test_oversized_bodies_are_refused(world):
    client, _, _ = world
    response = client.post("/events", content=b"x" * 1_100_000, headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
    assert response.status_code == 413


def test_health_and_openapi_docs(world):
    client, _, _ = world
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
    assert client.get("/docs").status_code == 200
    assert "/events" in client.get("/openapi.json").json()["paths"]


def test_sales_answer_through_the_api_and_a_closed_handoff_is_refused(world, clock):
    from relance.sales import open_handoff
    from relance.scoring.config import ScoringConfig

    client, _, engine = world
    with Session(engine) as session:
        lead = session.exec(select(Lead)).scalars().one()
        open_handoff(session, lead, scoring=ScoringConfig(), now=clock.now(), source="test")
        session.commit()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = client.post("/sales/lea@acme.example/reject", json={"by": "karim@example.com", "reason": "nope"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "reason"]
    assert "needs a reason among no-budget" in bad.json()["detail"][0]["msg"]
    ok = client.post("/sales/lea@acme.example/accept", json={"by": "claire@example.com", "bant": {"budget": "40k"}}, headers=auth)
    assert ok.status_code == 200 and ok.json()["status"] == "accepted"
    again = client.post("/sales/lea@acme.example/later", json={"by": "claire@example.com"}, headers=auth)
    assert again.status_code == 409 and "is closed: accepted" in again.json()["detail"]
    assert client.post("/sales/ghost@x.example/accept", json={"by": "x"}, headers=auth).status_code == 404
    assert client.post("/sales/lea@acme.example/accept", json={"by": "x"}).status_code == 401
    assert _lead(engine).stage == "sql"


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


@pytest.fixture
def server(tmp_path):
    """`relance serve` in its own process on a free port (SQLite): its port and process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "RELANCE_DATABASE_URL": f"sqlite:///{tmp_path / 'relance.db'}", "RELANCE_API_TOKEN": TOKEN,
           "RELANCE_SCENARIOS_DIR": str(ROOT / "scenarios"), "RELANCE_TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
           "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"), "RELANCE_SECRET_KEY": SERVER_KEY,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "relance.cli", "serve", "--port", str(port)], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        said = b""
        while b"Uvicorn running on" not in said:  # uvicorn says so on stderr once it listens
            line = process.stderr.readline()
            assert line, f"relance serve did not start: {said.decode()}"
            said += line
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_chunked_body_without_length_is_cut_at_1_mb_by_a_real_server_which_stops_reading(server):
    port, process = server
    before = _rss_mib(process.pid)
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(f"POST /events HTTP/1.1\r\nHost: relance\r\nAuthorization: Bearer {TOKEN}\r\n"
                       "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    answer: list[bytes] = []
    reader = threading.Thread(target=lambda: answer.extend(iter(lambda: _recv(connection), b"")))
    reader.start()
    chunk, sent, offered = b"x" * 65536, 0, 32 * 2**20
    try:
        while sent < offered:
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except OSError:  # the server answered and closed: the rest of the body is never read
        pass
    reader.join(timeout=10)
    connection.close()

    assert b"".join(answer).startswith(b"HTTP/1.1 413"), b"".join(answer)[:200]
    assert b"request body larger than 1000000 bytes" in b"".join(answer)
    assert sent < offered / 2, f"the server read {sent} bytes of {offered}"
    assert _rss_mib(process.pid) - before < 8


def _recv(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except OSError:  # reset once the server closed: what it answered was read before
        return b""


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-folder/relance.db", "postgresql+psycopg://postgres@127.0.0.1:9/relance"],
                         ids=["sqlite-file-gone", "postgresql-down"])
def test_a_database_out_of_reach_is_503_with_a_sentence_never_a_500(url, clock):
    from sqlalchemy import create_engine

    settings = Settings(scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails", api_token=TOKEN)
    engine = create_engine(url, connect_args={"connect_timeout": 2} if url.startswith("postgresql") else {})
    client = TestClient(create_app(settings, engine=engine, workspace=load_workspace(settings), clock=clock))

    health = client.get("/health")
    assert health.status_code == 503 and health.json() == {"status": "down", "database": "unreachable"}
    posted = client.post("/events", json={"type": "form_submitted", "email": "tom@acme.example"},
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert posted.status_code == 503 and posted.headers["retry-after"] == "30"
    assert posted.json() == {"detail": "the database does not answer: nothing was stored; try again in a moment"}
