"""Preferences on the unsubscribe page, through the real API and real ticks (both backends).

The page offers everything, only the newsletter or a pause of three months, in the lead's language; a choice is a
suppression with a scope and an end (relance.suppression), honoured at send time by every scenario: a lead who kept
only the newsletter gets `newsletter: true` scenarios' emails and no other, a paused lead gets nothing until the pause
ends and then gets mail again, everything is for good, and RFC 8058's one-click POST still means everything.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from sqlmodel import Session
from typer.testing import CliRunner

from recording import RecordingTransport  # tests/recording.py
from relance.api.app import create_app
from relance.cli import app as cli
from relance.clock import FrozenClock
from relance.email import tracking
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.privacy import export, forget
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from relance.store.tables import Lead, Outbox, Suppression
from relance.suppression import (ALL, EXCEPT_NEWSLETTER, HASHED, address_hash, held_by_preferences, set_preference,
                                 suppress)
from relance.tick import run_tick_inline
from relance.workspace import Workspace, load_workspace
from tests.basis import professional
from tests.browser import chromium
from tests.units import committed

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "https://t.relance.example"
LEA = "lea@acme.example"  # French (relance's default language)
BEN = "ben@initech.example"  # English
BOB = "bob@globex.example"  # chooses nothing: what everyone else gets
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class World:
    engine: Engine
    settings: Settings
    workspace: Workspace
    clock: FrozenClock
    client: TestClient
    paths: dict[str, str]  # each lead's unsubscribe page (from the guide it was sent)
    start: object  # when the guide was sent (the clock's first instant)

    def tick(self, scenario: str, *, after: timedelta) -> list[tuple[str, str]]:
        """A real tick of `scenario` `after` the start; (recipient, template) of what left."""
        transport = RecordingTransport()
        run_tick_inline(self.engine, self.settings, scenario=scenario, now=self.start + after, workspace=self.workspace,
                        templates=TemplateLibrary(self.settings.templates_dir), transport=transport)
        with Session(self.engine) as session:
            return [(sent.to, session.get(Outbox, sent.outbox_id).template) for sent in transport.sent]

    def choose(self, email: str, choice: str) -> httpx.Response:
        return self.client.post(self.paths[email], content=f"choice={choice}", headers=FORM)

    def rows(self, email: str, template: str) -> list[Outbox]:
        with Session(self.engine) as session:
            lead = session.exec(select(Lead).where(Lead.email == email)).scalars().one()
            return list(session.exec(select(Outbox).where(Outbox.lead_id == lead.id, Outbox.template == template)
                                     .order_by(Outbox.id)).scalars())

    def entry(self, email: str) -> Suppression | None:
        with Session(self.engine) as session:
            entry = session.exec(select(Suppression).where(Suppression.email_hash == address_hash(email))).scalars().first()
            session.expunge_all()
            return entry

    def lead(self, email: str) -> Lead:
        with Session(self.engine) as session:
            lead = session.exec(select(Lead).where(Lead.email == email)).scalars().one()
            session.expunge_all()
            return lead


@pytest.fixture
def world(engine, clock, tmp_path, db_url) -> World:
    """Three nurtured leads (grade B: the newsletter's segment) who downloaded the white paper and got its guide."""
    settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key="k" * 32, public_url=PUBLIC, api_token="t" * 20)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        for email, name, language in ((LEA, "Léa", "fr"), (BEN, "Ben", "en"), (BOB, "Bob", "fr")):
            upsert_lead(session, email=email, now=clock.now(), first_name=name, language=language,
                        fields=professional())
        session.execute(update(Lead).values(stage="nurturing", grade="B"))
        session.commit()
    committed(engine, ingest_events, workspace=workspace, now=clock.now(), events=[
        IncomingEvent("downloaded", email, clock.now(), {"asset": "livre-blanc-leads"}) for email in (LEA, BEN, BOB)])
    client = TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock))
    world = World(engine, settings, workspace, clock, client, {}, clock.now())
    assert sorted(world.tick("whitepaper-nurture", after=timedelta(0))) == [
        (BEN, "whitepaper-followup"), (BOB, "whitepaper-followup"), (LEA, "whitepaper-followup")]
    for email in (LEA, BEN, BOB):
        [guide] = world.rows(email, "whitepaper-followup")
        url = tracking.unsubscribe_url(public_url=PUBLIC, secret=settings.secret_key, outbox_id=guide.id,
                                       lead_id=guide.lead_id, email=email)
        world.paths[email] = url.removeprefix(PUBLIC)
    clock.advance(timedelta(minutes=30))  # the lead reads the guide, then follows its unsubscribe link
    return world


REMINDER = timedelta(days=4)  # Friday: the reminder is due (the guide was not opened)


# --------------------------------------------------------------------------- the page


def test_the_page_offers_the_three_choices_in_the_leads_language_and_a_get_changes_nothing(world):
    french, english = world.client.get(world.paths[LEA]), world.client.get(world.paths[BEN])
    assert french.status_code == english.status_code == 200
    assert "<html lang=fr>" in french.text and "<html lang=en>" in english.text
    for page in (french, english):
        assert "<form method=post>" in page.text
        assert re.findall(r"name=choice value=(\w+)", page.text) == ["all", "newsletter", "pause"]
    for words in ("Me désinscrire de tout", "Seulement la lettre d'information", "Faire une pause de 3 mois",
                  "Enregistrer mon choix"):
        assert words in french.text.replace("&#x27;", "'")
    for words in ("Unsubscribe from everything", "Only the newsletter", "Pause for 3 months", "Save my choice"):
        assert words in english.text
    assert "désinscrire" not in english.text and "Pause for" not in french.text
    assert world.entry(LEA) is None and world.entry(BEN) is None  # a GET (a scanner's, a prefetch) changes nothing


def test_a_lead_of_another_language_reads_english_and_one_of_none_french(world):
    with Session(world.engine) as session:
        session.execute(update(Lead).where(Lead.email == LEA).values(language="de"))
        session.execute(update(Lead).where(Lead.email == BEN).values(language="fr-CA"))
        session.commit()
    assert "Save my choice" in world.client.get(world.paths[LEA]).text
    assert "Enregistrer mon choix" in world.client.get(world.paths[BEN]).text


def test_a_choice_is_confirmed_in_the_leads_language_and_the_page_then_says_it(world):
    french = world.choose(LEA, "pause")
    assert french.status_code == 200 and "C'est noté" in french.text.replace("&#x27;", "'")
    assert "jusqu'au 5 avril 2026" in french.text.replace("&#x27;", "'")  # 90 days after 2026-01-05
    english = world.choose(BEN, "newsletter")
    assert english.status_code == 200 and "will only receive our newsletter" in english.text
    again = world.client.get(world.paths[LEA]).text
    assert "en pause jusqu'au 5 avril 2026" in again.replace("&#x27;", "'") and "value=pause required checked" in again
    assert "value=newsletter required checked" in world.client.get(world.paths[BEN]).text


@pytest.mark.parametrize("body", ["", "nothing", "choice=", "choice=forever", "choice=%00", "List-Unsubscribe=Two-Clicks",
                                  "\udcff".encode("utf-8", "surrogatepass")])
def test_a_bad_or_absent_choice_is_a_clear_page_and_changes_nothing(world, body):
    for email, words in ((LEA, "Choisissez une option"), (BEN, "Please choose an option")):
        response = world.client.post(world.paths[email], content=body, headers=FORM)
        assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")
        assert words in response.text and "name=choice value=pause" in response.text  # the form again
        assert world.entry(email) is None and world.lead(email).suppressed is None


# --------------------------------------------------------------------------- each choice, then real ticks


def test_only_the_newsletter_gets_the_newsletter_and_no_nurture_email(world):
    assert world.choose(LEA, "newsletter").status_code == 200
    entry = world.entry(LEA)
    assert (entry.reason, entry.scope, entry.until, entry.source) == ("preference", EXCEPT_NEWSLETTER, None, "link:newsletter")
    assert world.lead(LEA).suppressed is None  # not suppressed for good: the newsletter still goes

    nurture = world.tick("whitepaper-nurture", after=REMINDER)
    assert (BOB, "whitepaper-reminder") in nurture and LEA not in {to for to, _ in nurture}
    [reminder] = world.rows(LEA, "whitepaper-reminder")
    assert (reminder.status, reminder.error) == ("skipped", "only the newsletter (unsubscribe page)")
    newsletter = world.tick("monthly-newsletter", after=REMINDER)
    assert (LEA, "monthly-newsletter") in newsletter
    assert [row.status for row in world.rows(LEA, "monthly-newsletter")] == ["sent"]
    # the cap (sending.yaml: one marketing email a day) counts the reminder Bob got, and none for Léa's skipped one
    assert (BOB, "monthly-newsletter") not in newsletter
    [held] = world.rows(BOB, "monthly-newsletter")
    assert held.status == "pending" and held.held


def test_a_pause_stops_every_email_until_it_ends_then_mail_goes_again(world):
    assert world.choose(LEA, "pause").status_code == 200
    entry = world.entry(LEA)
    assert (entry.scope, entry.until) == (ALL, world.clock.now() + timedelta(days=90))

    assert LEA not in {to for to, _ in world.tick("whitepaper-nurture", after=REMINDER)}
    assert LEA not in {to for to, _ in world.tick("monthly-newsletter", after=REMINDER)}
    [reminder] = world.rows(LEA, "whitepaper-reminder")
    assert (reminder.status, reminder.error) == ("skipped", "paused until 2026-04-05 (unsubscribe page)")
    [newsletter] = world.rows(LEA, "monthly-newsletter")
    assert (newsletter.status, newsletter.error) == ("skipped", "paused until 2026-04-05 (unsubscribe page)")
    assert LEA not in {to for to, _ in world.tick("monthly-newsletter", after=timedelta(days=60))}  # still paused

    after = world.tick("monthly-newsletter", after=timedelta(days=91, hours=1))  # the pause is over
    assert (LEA, "monthly-newsletter") in after
    assert [row.status for row in world.rows(LEA, "monthly-newsletter")][-1] == "sent"
    assert world.lead(LEA).suppressed is None


def test_everything_is_the_permanent_suppression(world):
    response = world.choose(BEN, "all")
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    entry = world.entry(BEN)
    assert (entry.reason, entry.scope, entry.until) == ("unsubscribed", ALL, None)
    assert world.lead(BEN).suppressed == "unsubscribed"
    for after in (REMINDER, timedelta(days=91, hours=1), timedelta(days=400)):
        assert BEN not in {to for to, _ in world.tick("monthly-newsletter", after=after)}
    assert BEN not in {to for to, _ in world.tick("whitepaper-nurture", after=REMINDER)}
    assert "You are unsubscribed" in world.client.get(world.paths[BEN]).text  # no choice left to offer
    assert "You are unsubscribed" in world.choose(BEN, "pause").text  # nothing is less than everything
    assert (world.entry(BEN).scope, world.entry(BEN).until) == (ALL, None)


def test_the_one_click_post_still_means_everything_even_over_a_preference(world):
    assert world.choose(LEA, "pause").status_code == 200
    for _ in range(2):  # RFC 8058: mail clients post the body alone, sometimes twice
        response = world.client.post(world.paths[LEA], content="List-Unsubscribe=One-Click", headers=FORM)
        assert response.status_code == 200 and "Vous êtes désinscrit" in response.text
    entry = world.entry(LEA)
    assert (entry.reason, entry.scope, entry.until, entry.source) == ("unsubscribed", ALL, None, "link:unsubscribed")
    assert world.lead(LEA).suppressed == "unsubscribed"
    assert LEA not in {to for to, _ in world.tick("monthly-newsletter", after=timedelta(days=91, hours=1))}


# --------------------------------------------------------------------------- visible: CLI, export, forget


@pytest.fixture
def cli_env(world, tmp_path, monkeypatch, db_url) -> World:
    monkeypatch.setenv("RELANCE_DATABASE_URL", db_url)
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(ROOT / "scenarios"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(ROOT / "templates" / "emails"))
    monkeypatch.setenv("RELANCE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield world
    get_settings.cache_clear()


def _relance(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _cells(output: str) -> str:
    """A table's text with its borders and line folds taken out (a console 80 columns wide folds long cells)."""
    return " ".join(re.sub(r"[│┃┆|]", " ", output).split())


def test_lead_show_suppress_list_and_the_export_say_the_scope_and_the_end(cli_env):
    world = cli_env
    world.choose(LEA, "pause")
    world.choose(BEN, "newsletter")
    assert re.search(r"preference \(link:pause, 2026-01-05 09:30 UTC\): stops everything until 2026-04-05",
                     _cells(_relance("lead", "show", LEA)))
    assert "stops all but the newsletter" in _cells(_relance("lead", "show", BEN))
    shown = json.loads(_relance("lead", "show", LEA, "--json"))
    assert shown["suppression"] == {"suppressed": False, "reason": None}
    assert (shown["suppression_list"]["scope"], shown["suppression_list"]["until"]) == ("all", "2026-04-05T09:30:00+00:00")
    listed = {e["email"]: e for e in json.loads(_relance("suppress", "list", "--json"))}
    assert (listed[LEA]["scope"], listed[LEA]["until"]) == ("all", "2026-04-05T09:30:00+00:00")
    assert (listed[BEN]["scope"], listed[BEN]["until"]) == ("except_newsletter", None)
    table = _cells(_relance("suppress", "list"))
    assert all(word in table for word in ("everything", "2026-04-05", "newsletter"))  # a narrow console folds the cells
    with Session(world.engine) as session:
        exported = export(session, email=LEA)
    assert exported["suppression"]["list"]["scope"] == "all"
    assert exported["suppression"]["list"]["until"] == world.start + timedelta(minutes=30, days=90)


def test_forgetting_a_lead_with_a_preference_leaves_the_hashed_permanent_entry(world):
    world.choose(LEA, "newsletter")
    with Session(world.engine) as session:
        forget(session, email=LEA, now=world.clock.now())
        session.commit()
        [entry] = session.exec(select(Suppression).where(Suppression.email_hash == address_hash(LEA))).scalars().all()
        assert (entry.email, entry.scope, entry.until) == (HASHED + address_hash(LEA), ALL, None)
        assert entry.reason == "forgotten"
    assert sorted(to for to, _ in world.tick("monthly-newsletter", after=REMINDER)) == [BEN, BOB]


# --------------------------------------------------------------------------- the store: what a preference holds back


def test_staff_mail_webhooks_and_transactional_email_still_go_to_a_paused_lead(engine, clock):
    now = clock.now()
    with Session(engine) as session:
        lead = upsert_lead(session, email=LEA, now=now)
        session.flush()
        rows = {name: Outbox(lead_id=lead.id, scenario="whitepaper-nurture", template="t", to_address=to, kind=kind,
                             marketing=marketing, created_at=now)
                for name, to, kind, marketing in (("marketing", LEA, "lead", True), ("transactional", LEA, "lead", False),
                                                  ("staff", "jeanne@relance.example", "internal", False),
                                                  ("webhook", "https://crm.example/hook", "webhook", False))}
        session.add_all(rows.values())
        assert set_preference(session, email=LEA, scope=ALL, until=now + timedelta(days=90), source="test", now=now)
        session.commit()
        ids = {name: row.id for name, row in rows.items()}
        batch = [session.get(Outbox, i) for i in ids.values()]
        leads = {lead.id: lead}
        assert held_by_preferences(session, rows=batch, leads=leads, now=now) == {
            ids["marketing"]: "paused until 2026-04-05 (unsubscribe page)"}
        assert held_by_preferences(session, rows=batch, leads=leads, now=now + timedelta(days=90)) == {}  # it ended
        # a permanent suppression replaces the preference, with its reason; the lead is flagged
        assert suppress(session, email=LEA, reason="bounced", source="ses", now=now)
        session.commit()
        entry = session.get(Suppression, LEA)
        assert (entry.reason, entry.scope, entry.until) == ("bounced", ALL, None) and lead.suppressed == "bounced"
        assert not set_preference(session, email=LEA, scope=EXCEPT_NEWSLETTER, until=None, source="test", now=now)
        with pytest.raises(ValueError, match="scope 'some'"):
            set_preference(session, email=LEA, scope="some", until=None, source="test", now=now)


# --------------------------------------------------------------------------- a real browser


def test_a_headless_chromium_renders_the_three_choices_and_posts_the_form(world, tmp_path, request):
    server = uvicorn.Server(uvicorn.Config(world.client.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with chromium(tmp_path / "chromium", request.node.name) as browser:
            browser.open(f"http://127.0.0.1:{port}{world.paths[BEN]}")
            rendered = json.loads(browser.evaluate(
                "JSON.stringify({lang: document.documentElement.lang, valid: document.forms[0].checkValidity(),"
                " choices: [...document.querySelectorAll('input[type=radio][name=choice]')]"
                ".map(i => [i.value, i.labels[0].innerText.trim(), i.offsetHeight > 0])})"))
            assert rendered["lang"] == "en" and rendered["valid"] is False  # nothing chosen: the browser will not post
            assert rendered["choices"] == [
                ["all", "Unsubscribe from everything: receive nothing more", True],
                ["newsletter", "Only the newsletter", True],
                ["pause", "Pause for 3 months, then receive our emails again", True]]
            browser.evaluate(
                "document.querySelector('input[value=newsletter]').click(); document.querySelector('button').click()")
            browser.wait_for_load()
            after = browser.text()
        assert "will only receive our newsletter" in after
        entry = world.entry(BEN)
        assert (entry.scope, entry.until, entry.source) == (EXCEPT_NEWSLETTER, None, "link:newsletter")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
