"""Erasure and export (issue 14 item 5), on both backends: `forget` leaves no personal text in any table, keeps the
report's counts and a hashed suppression entry every door recognises; `export` holds everything; the CLI and the API."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

from relance.api.app import create_app
from relance.cli import app
from relance.deals import Closing, record_deal
from relance.email.templates import TemplateLibrary
from relance.importer import import_leads, read_leads_csv
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.privacy import export, forget
from relance.report import build_report
from relance.sales import Answer, answer, open_handoff
from relance.settings import Settings, get_settings
from relance.store.repo import find_lead
from relance.store.tables import Outbox, Suppression
from relance.suppression import address_hash
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.shipped import shipped_environment
from tests.units import committed

TOKEN = "s3cret-token-of-the-tests"
EMAIL = "lea.martinez@acmeverse.example"
PERSONAL = (EMAIL, "Léa", "Martinez-Dubois", "Acmeverse", "+33 6 12 34 56 78", "rappeler après le salon de Lyon",
            "contrat signé en direct avec la DAF")


@pytest.fixture
def settings(tmp_path, monkeypatch, db_url) -> Settings:
    """The shipped scenarios and templates, this test's database, for the workspace, the CLI and the API."""
    yield shipped_environment(tmp_path, monkeypatch, db_url, RELANCE_API_TOKEN=TOKEN, COLUMNS="250")
    get_settings.cache_clear()


def _form(email: str, when, key: str) -> IncomingEvent:
    return IncomingEvent("form_submitted", email, when, {
        "form": "livre-blanc", "first_name": "Léa", "last_name": "Martinez-Dubois", "company": "Acmeverse",
        "job_title": "Directrice marketing", "phone": "+33 6 12 34 56 78", "consent_source": "page livre blanc",
        "consent_wording": "J'accepte de recevoir les emails d'Acmeverse partenaires."}, key)


def _a_whole_life(engine, settings, clock) -> None:
    """A lead through a form (profile, phone, consent), a download, the guide sent, a hand-off with notes, a won deal."""
    workspace = load_workspace(settings)
    with Session(engine) as session:
        sync_scenarios(session, workspace=workspace, now=clock.now())  # the scenarios the download starts
        ingest_events(session, workspace=workspace, now=clock.now(), channel="api", events=[
            _form(EMAIL, clock.now(), "f1"),
            IncomingEvent("downloaded", EMAIL, clock.now(), {"asset": "livre-blanc-leads"}, "d1")])
        session.commit()
    clock.advance(timedelta(minutes=5))
    run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.now(), workspace=workspace,
                    templates=TemplateLibrary(settings.templates_dir))
    with Session(engine) as session:
        lead = find_lead(session, EMAIL)
        open_handoff(session, lead, scoring=workspace.scoring, now=clock.now(), source="test")
        answer(session, email=EMAIL, reply=Answer("accept", "claire@example.com", note="rappeler après le salon de Lyon",
                                                  bant={"budget": "20k chez Acmeverse"}),
               scoring=workspace.scoring, now=clock.now())
        record_deal(session, email=EMAIL, closing=Closing("won", "claire@example.com", amount=12000, margin=4000,
                                                          note="contrat signé en direct avec la DAF"),
                    scoring=workspace.scoring, now=clock.now())
        session.commit()


def _every_text(engine) -> str:
    """Every column of every row of every table, as text (JSON documents with their keys)."""
    texts = []
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(select(table)):
                texts.extend(json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else str(v)
                             for v in row)
    return "\n".join(texts).lower()


def _figures(engine, clock) -> dict:
    """The whole report: funnel, steps, SLA, economics."""
    with Session(engine) as session:
        return build_report(session, now=clock.now())


def test_forget_leaves_no_personal_text_anywhere_and_keeps_the_reports_counts(engine, settings, clock):
    _a_whole_life(engine, settings, clock)
    assert all(text.lower() in _every_text(engine) for text in PERSONAL)  # the scan sees them before
    before = _figures(engine, clock)
    assert before["funnel"]["counts"]["customer"] == 1

    done = committed(engine, forget, email=EMAIL.upper(), now=clock.now())
    assert done is not None and not done.already

    everything = _every_text(engine)
    assert [text for text in PERSONAL if text.lower() in everything] == []
    assert address_hash(EMAIL) in everything  # all that is left of the address
    assert _figures(engine, clock) == before
    with Session(engine) as session:
        entry = session.execute(select(Suppression)).scalars().one()
        assert (entry.email, entry.email_hash, entry.source) == (f"sha256:{address_hash(EMAIL)}", address_hash(EMAIL), "forget")
        assert export(session, email=EMAIL) is None

    again = committed(engine, forget, email=EMAIL, now=clock.now())
    assert again is not None and again.already  # harmless
    assert _every_text(engine) == everything
    assert committed(engine, forget, email="nobody@acmeverse.example", now=clock.now()) is None


def test_a_forgotten_address_that_comes_back_is_recognised_as_suppressed(engine, settings, clock):
    _a_whole_life(engine, settings, clock)
    committed(engine, forget, email=EMAIL, now=clock.now())
    clock.advance(timedelta(days=1))
    workspace = load_workspace(settings)
    with Session(engine) as session:  # through a form, which creates the lead again, and a download that triggers
        ingest_events(session, workspace=workspace, now=clock.now(), channel="api", events=[
            _form(EMAIL, clock.now(), "f2"), IncomingEvent("downloaded", EMAIL, clock.now(), {"asset": "livre-blanc-leads"}, "d2")])
        session.commit()
        back = find_lead(session, EMAIL)
        assert back.suppressed == "forgotten"
    clock.advance(timedelta(minutes=5))
    run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.now(), workspace=workspace,
                    templates=TemplateLibrary(settings.templates_dir))
    with Session(engine) as session:
        assert session.execute(select(Outbox.status).where(Outbox.lead_id == back.id, Outbox.status == "sent")).all() == []

    other = "Lea.Martinez@Acmeverse.example"  # the same address, written otherwise, through an import
    committed(engine, forget, email=EMAIL, now=clock.now())
    parsed = read_leads_csv(f"email,first_name\n{other},Léa\nnew@acmeverse.example,Noé\n".encode(), source="salon")
    committed(engine, import_leads, parsed, now=clock.now())
    with Session(engine) as session:
        assert find_lead(session, EMAIL).suppressed == "forgotten"
        assert find_lead(session, "new@acmeverse.example").suppressed is None


def test_export_holds_everything_about_the_person(engine, settings, clock):
    _a_whole_life(engine, settings, clock)
    with Session(engine) as session:
        held = export(session, email=EMAIL)
        assert export(session, email="nobody@acmeverse.example") is None
    assert (held["profile"]["email"], held["profile"]["first_name"], held["profile"]["company"]) == (EMAIL, "Léa", "Acmeverse")
    assert held["consent"]["current"]["source"] == "page livre blanc"
    assert {e["type"] for e in held["events"]} >= {"form_submitted", "downloaded"}
    assert any(e["properties"].get("phone") == "+33 6 12 34 56 78" for e in held["events"])
    assert [(o["to_address"], o["status"]) for o in held["emails"] if o["kind"] == "lead"] == [(EMAIL, "sent")]
    assert [(h["status"], h["note"]) for h in held["handoffs"]] == [("accepted", "rappeler après le salon de Lyon")]
    assert [(d["outcome"], d["amount"], d["note"]) for d in held["deals"]] == [("won", 12000, "contrat signé en direct avec la DAF")]
    assert held["score_history"] and held["stage_history"][-1]["to_stage"] == "customer"
    assert held["enrollments"][0]["scenario"] == "whitepaper-nurture" and held["steps"]


def test_the_cli_exports_and_forgets(engine, settings, clock):
    _a_whole_life(engine, settings, clock)
    runner = CliRunner()
    exported = runner.invoke(app, ["lead", "export", EMAIL])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["profile"]["last_name"] == "Martinez-Dubois"

    forgotten = runner.invoke(app, ["lead", "forget", EMAIL, "--now", clock.now().isoformat()])
    assert forgotten.exit_code == 0, forgotten.output
    assert "forgotten" in forgotten.stdout and EMAIL.lower() not in _every_text(engine)
    twice = runner.invoke(app, ["lead", "forget", EMAIL])
    assert twice.exit_code == 0 and "forgotten before" in twice.stdout

    for command in (["lead", "forget", "nobody@acmeverse.example"], ["lead", "export", EMAIL]):
        unknown = runner.invoke(app, command)
        assert unknown.exit_code == 1 and "Traceback" not in unknown.output
        assert unknown.stderr.strip().count("\n") == 0 and "no lead with email" in unknown.stderr


def test_the_api_exports_and_forgets_behind_the_token(engine, settings, clock):
    _a_whole_life(engine, settings, clock)
    client = TestClient(create_app(settings, engine=engine, workspace=load_workspace(settings), clock=clock))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get(f"/leads/{EMAIL}/export").status_code == 401
    assert client.delete(f"/leads/{EMAIL}").status_code == 401

    held = client.get(f"/leads/{EMAIL}/export", headers=auth)
    assert held.status_code == 200 and held.json()["profile"]["email"] == EMAIL
    assert held.json()["deals"][0]["note"] == "contrat signé en direct avec la DAF"

    gone = client.delete(f"/leads/{EMAIL}", headers=auth)
    assert (gone.status_code, gone.json()) == (200, {"email": EMAIL, "status": "forgotten"})
    assert client.delete(f"/leads/{EMAIL}", headers=auth).json()["status"] == "already forgotten"
    assert [text for text in PERSONAL if text.lower() in _every_text(engine)] == []
    for missing in (client.get(f"/leads/{EMAIL}/export", headers=auth), client.delete("/leads/nobody@acmeverse.example", headers=auth)):
        assert missing.status_code == 404 and "no lead with email" in missing.json()["detail"]


def test_migration_0008_hashes_the_addresses_already_on_the_list(db_url, clock):
    from alembic import command
    from sqlalchemy import text

    from relance.store.db import alembic_config, make_engine
    from relance.suppression import suppressed_among

    engine = make_engine(db_url)
    config = alembic_config(engine)
    command.upgrade(config, "0007")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO suppression (email, reason, source, at) VALUES (:e, 'manual', 'cli', :t)"),
                           {"e": EMAIL, "t": clock.now().replace(tzinfo=None) if db_url.startswith("sqlite") else clock.now()})
    command.upgrade(config, "head")
    with Session(engine) as session:
        assert session.execute(select(Suppression.email_hash)).scalars().all() == [address_hash(EMAIL)]
        assert suppressed_among(session, [EMAIL.upper()]) == {EMAIL: "manual"}
    command.downgrade(config, "0007")
    command.upgrade(config, "head")
    engine.dispose()
