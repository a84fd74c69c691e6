"""Consent is never dropped: every form's consent is kept on the lead, new or known, with the history of every record
(through ingestion, `relance event`, `POST /events`), and `relance lead show` shows it; on both backends."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.api.app import create_app
from relance.cli import app
from relance.ingest import BadEvent, IncomingEvent, ingest_events
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from relance.store.tables import Event, Lead, Suppression
from relance.workspace import load_workspace
from tests.shipped import shipped_environment
from tests.units import committed

TOKEN = "s3cret-token-of-the-tests"
EMAIL = "lea@acme.example"


@pytest.fixture
def settings(tmp_path, monkeypatch, db_url) -> Settings:
    """The shipped scenarios and templates, this test's database, for the workspace, the CLI and the API."""
    yield shipped_environment(tmp_path, monkeypatch, db_url, RELANCE_API_TOKEN=TOKEN, COLUMNS="250")
    get_settings.cache_clear()


def _known_lead(engine, clock) -> None:
    """A lead imported before any form: no consent on record."""
    with Session(engine) as session:
        upsert_lead(session, email=EMAIL, now=clock.now(), first_name="Léa")
        session.commit()


def _fields(engine) -> dict:
    with Session(engine) as session:
        return session.exec(select(Lead.fields).where(Lead.email == EMAIL)).scalars().one()


def _form(when, key, **consent) -> IncomingEvent:
    return IncomingEvent("form_submitted", EMAIL, when, {"form": "webinar-mars", **{f"consent_{k}": v for k, v in consent.items()}}, key)


def test_a_form_for_a_known_lead_keeps_its_consent_and_every_record_before_it(engine, settings, clock):
    workspace = load_workspace(settings)
    _known_lead(engine, clock)
    t0 = clock.now()
    committed(engine, ingest_events, workspace=workspace, events=[_form(t0, "f1", source="page webinar", wording="J'accepte les emails.")], now=t0, channel="api")
    later = t0 + timedelta(days=3)
    committed(engine, ingest_events, workspace=workspace, events=[_form(later, "f2", source="page tarifs", wording="J'accepte les emails et les appels.")], now=later, channel="cli")
    committed(engine, ingest_events, workspace=workspace, events=[_form(later, "f2", source="page tarifs", wording="J'accepte les emails et les appels.")], now=later + timedelta(hours=1), channel="cli")  # a replay of the same form: no new record
    older = t0 - timedelta(days=1)  # a form that reached relance late: it takes its place in time, not the newest
    committed(engine, ingest_events, workspace=workspace, events=[_form(older, "f0", source="salon", wording="Oui.", at=older.isoformat())], now=later + timedelta(hours=2), channel="api")

    fields = _fields(engine)
    history = fields["consent_history"]
    assert [(r["source"], r["granted"], r["at"]) for r in history] == [
        ("salon", True, older.isoformat()), ("page webinar", True, t0.isoformat()), ("page tarifs", True, later.isoformat())]
    assert history[1] == {"granted": True, "source": "page webinar", "wording": "J'accepte les emails.", "at": t0.isoformat(),
                          "event": "form_submitted", "channel": "api", "form": "webinar-mars"}
    assert fields["consent"] == history[-1]  # the consent the lead has now: the newest record


def test_a_withdrawal_is_recorded_and_stops_every_email(engine, settings, clock):
    workspace = load_workspace(settings)
    committed(engine, ingest_events, workspace=workspace, events=[_form(clock.now(), "f1", source="page webinar", wording="J'accepte.")], now=clock.now())
    at = clock.now() + timedelta(days=1)
    committed(engine, ingest_events, workspace=workspace, events=[_form(at, "f2", source="préférences", wording="Je ne veux plus d'emails.", granted="false")], now=at, channel="api")
    fields = _fields(engine)
    assert [r["granted"] for r in fields["consent_history"]] == [True, False] and fields["consent"]["granted"] is False
    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == EMAIL)).scalars().one()
        entry = session.get(Suppression, EMAIL)
    assert lead.suppressed == "unsubscribed" and entry.source == "api:consent withdrawn"


def test_consent_kept_before_there_was_a_history_is_its_first_record(engine, settings, clock):
    with Session(engine) as session:  # how a form that created the lead kept its consent before
        upsert_lead(session, email=EMAIL, now=clock.now())
        session.flush()
        lead = session.exec(select(Lead).where(Lead.email == EMAIL)).scalars().one()
        lead.fields = {"consent": {"source": "ancien formulaire", "wording": "Oui.", "at": clock.now().isoformat()}, "sector": "x"}
        session.commit()
    at = clock.now() + timedelta(days=1)
    committed(engine, ingest_events, workspace=load_workspace(settings), events=[_form(at, "f1", source="nouveau", wording="Oui !")], now=at)
    fields = _fields(engine)
    assert [r["source"] for r in fields["consent_history"]] == ["ancien formulaire", "nouveau"]
    assert fields["consent_history"][0]["granted"] is True and fields["sector"] == "x"


def test_an_unreadable_consent_is_refused_and_nothing_is_stored(engine, settings, clock):
    workspace = load_workspace(settings)
    for bad, field in (({"at": "yesterday"}, "consent_at"), ({"granted": "maybe"}, "consent_granted")):
        with pytest.raises(BadEvent) as refused:
            committed(engine, ingest_events, workspace=workspace, events=[_form(clock.now(), "f-bad", source="x", wording="y", **bad)], now=clock.now())
        assert refused.value.field == field and refused.value.email == EMAIL
        assert str(refused.value).startswith(f"form_submitted for {EMAIL}: {field}")
    with Session(engine) as session:
        assert session.exec(select(Lead)).scalars().all() == [] and session.exec(select(Event)).scalars().all() == []


def test_relance_event_and_lead_show(engine, settings, clock):
    _known_lead(engine, clock)
    runner = CliRunner()
    stored = runner.invoke(app, ["event", "form_submitted", "--lead", EMAIL, "--prop", "form=webinar-mars",
                                 "--prop", "consent_source=page webinar", "--prop", "consent_wording=J'accepte les emails.",
                                 "--at", "2026-01-05T10:00:00Z"])
    assert stored.exit_code == 0, stored.output

    shown = runner.invoke(app, ["lead", "show", EMAIL, "--json"])
    consent = json.loads(shown.stdout)["consent"]
    assert consent["state"] == "granted" and consent["current"]["source"] == "page webinar"
    assert [r["wording"] for r in consent["history"]] == ["J'accepte les emails."]
    table = runner.invoke(app, ["lead", "show", EMAIL])
    assert table.exit_code == 0, table.output
    assert "granted (page webinar, 2026-01-05 10:00 UTC)" in table.stdout
    assert ("2026-01-05 10:00 granted page webinar webinar-mars \"J'accepte les emails.\" cli form_submitted"
            in " ".join(table.stdout.split()))
    assert "Consent history (newest last)" in table.stdout

    bad = runner.invoke(app, ["event", "form_submitted", "--lead", EMAIL, "--prop", "consent_at=yesterday"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert " ".join(bad.stderr.split()) == (f"error: form_submitted for {EMAIL}: consent_at: 'yesterday' is not an ISO "
                                            "date/time like 2026-03-01T09:00:00+01:00 or 2026-03-01")


def test_lead_show_says_when_no_consent_is_recorded(engine, settings, clock):
    _known_lead(engine, clock)
    table = CliRunner().invoke(app, ["lead", "show", EMAIL])
    assert "none recorded" in table.stdout and "Consent history" not in table.stdout
    assert json.loads(CliRunner().invoke(app, ["lead", "show", EMAIL, "--json"]).stdout)["consent"] == {
        "state": None, "current": None, "history": []}


def test_post_events_with_consent_for_a_known_lead(engine, settings, clock):
    _known_lead(engine, clock)
    client = TestClient(create_app(settings, engine=engine, workspace=load_workspace(settings), clock=clock))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    given = {"type": "form_submitted", "email": EMAIL, "properties": {"form": "webinar-mars"},
             "consent": {"source": "formulaire webinar", "wording": "J'accepte de recevoir des emails."}}
    assert client.post("/events", json=given, headers=auth).status_code == 200
    clock.advance(timedelta(days=2))
    withdrawn = {"type": "form_submitted", "email": EMAIL, "idempotency_key": "w1",
                 "consent": {"source": "centre de préférences", "wording": "Je retire mon consentement.", "granted": False}}
    assert client.post("/events", json=withdrawn, headers=auth).status_code == 200

    fields = _fields(engine)
    assert [(r["source"], r["granted"], r["channel"]) for r in fields["consent_history"]] == [
        ("formulaire webinar", True, "api"), ("centre de préférences", False, "api")]
    assert fields["consent_history"][0]["at"] == (clock.now() - timedelta(days=2)).isoformat()  # the event's time
    assert fields["consent_history"][0]["form"] == "webinar-mars"

    bad = client.post("/events", json=[{"type": "page_visited", "email": EMAIL},
                                       {"type": "form_submitted", "email": EMAIL, "properties": {"consent_at": "hier"}}],
                      headers=auth)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", 1, "properties", "consent_at"]
    assert "consent_at: 'hier' is not an ISO date/time" in bad.json()["detail"][0]["msg"]
    with Session(engine) as session:  # the batch was refused whole: its first event is not stored either
        assert session.exec(select(Event).where(Event.type == "page_visited")).scalars().all() == []
