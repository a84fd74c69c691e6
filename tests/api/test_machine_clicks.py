"""Replayed and machine clicks (mail scanners) through the real app and a real database, both backends.

A lead gets one email from a real tick; its click tokens are signed as the tracker signs them (the email's template
has one content link, the bursts need two). The clock is injected: every "3 s later" is the clock moved, not waited.
"""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import select, text
from sqlmodel import Session

from relance.api.app import create_app
from relance.email import tracking
from relance.email.templates import TemplateLibrary
from relance.email.transports import FileTransport
from relance.engagement import machine_request
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.report import steps
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Enrollment, Event, Lead, Outbox, ScoreChange
from relance.tick import run_tick_inline
from relance.workspace import load_workspace, read_scoring
from tests.units import committed
from tests.basis import PROFESSIONAL_PROPS, professional

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "lea@acme.example"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
LINK_A, LINK_B, LINK_C = "https://relance.example/ressources/livre-blanc-leads", "https://relance.example/tarifs", "https://relance.example/blog"
BASE, CLICK = 10 + 5, 3  # the shipped scoring.yaml's points: a form and a download, a click
SCENARIOS = {
    # waits for a click on its email; a click scores 20 more
    "clicks.yaml": """scenario: clicks
trigger: {event: downloaded}
reentry: never
steps:
  - id: mail
    send: whitepaper-followup
    subject: "Votre livre blanc"
  - id: wait-click
    wait_until: {clicked: mail}
    timeout: 7d
    on_timeout: quiet
  - id: clicked
    score: +20
  - id: done
    end: true
  - id: quiet
    end: true
""",
    # started by any click
    "on-click.yaml": """scenario: on-click
trigger: {event: email_clicked}
reentry: never
steps:
  - id: seen
    end: true
""",
}


class World:
    """The app over a database where one graded lead (fit B, score 15) got the `clicks` email at the clock's time."""

    def __init__(self, engine, clock, tmp_path: Path, db_url: str) -> None:
        scenarios = tmp_path / "scenarios"
        scenarios.mkdir()
        shutil.copy(ROOT / "scenarios" / "scoring.yaml", scenarios / "scoring.yaml")
        for name, body in SCENARIOS.items():
            (scenarios / name).write_text(body, encoding="utf-8")
        self.settings = Settings(database_url=db_url, scenarios_dir=scenarios, templates_dir=ROOT / "templates" / "emails",
                                 outbox_dir=tmp_path / "outbox", secret_key="k" * 32, public_url="https://t.relance.example")
        self.engine, self.clock = engine, clock
        self.workspace = load_workspace(self.settings)
        committed(engine, sync_scenarios, now=clock.now(), workspace=self.workspace)
        profile = {"first_name": "Léa", "job_title": "Directrice marketing", "sector": "saas", "country": "FR", **PROFESSIONAL_PROPS}
        committed(engine, ingest_events, workspace=self.workspace, events=[IncomingEvent("form_submitted", EMAIL, clock.now(), profile),
                                             IncomingEvent("downloaded", EMAIL, clock.now(), {"asset": "livre-blanc-leads"})], now=clock.now())
        assert (self.lead().grade, self.lead().score) == ("B", BASE)  # fit 30 + 20 + 10; an MQL at 40 points
        assert self.tick().sent == 1
        with Session(engine) as session:
            self.outbox = session.exec(select(Outbox)).scalars().one()
        self.client = TestClient(create_app(self.settings, engine=engine, workspace=self.workspace, clock=clock),
                                 headers={"User-Agent": BROWSER})

    def tick(self):
        return run_tick_inline(self.engine, self.settings, scenario="clicks", now=self.clock.now(), workspace=self.workspace,
                               transport=FileTransport(self.settings.outbox_dir), templates=TemplateLibrary(self.settings.templates_dir))

    def path(self, link: str) -> str:
        return "/c/" + tracking.sign(self.settings.secret_key, kind=tracking.CLICK, outbox_id=self.outbox.id,
                                     lead_id=self.outbox.lead_id, email=EMAIL, link=link)

    def click(self, link: str = LINK_A, *, after: timedelta = timedelta(0), method: str = "GET", **headers) -> None:
        """`after` the last click (or the sending), a request on the link; it is redirected, whoever sent it."""
        self.clock.advance(after)
        response = self.client.request(method, self.path(link), headers=headers, follow_redirects=False)
        assert response.status_code == 302 and response.headers["location"] == link, response.text

    def lead(self, email: str = EMAIL) -> Lead:
        with Session(self.engine) as session:
            return session.exec(select(Lead).where(Lead.email == email)).scalars().one()

    def another_email(self) -> tuple[str, int, int]:
        """A new lead (score 0, in no scenario) and an email it was sent now: its address, lead id and outbox id."""
        email = f"p{next(_leads)}@acme.example"
        with Session(self.engine) as session:
            lead = upsert_lead(session, email=email, now=self.clock.now(), fields=professional())
            row = Outbox(lead_id=lead.id, scenario="clicks", step_id="mail", template="whitepaper-followup", to_address=email,
                         status="sent", created_at=self.clock.now(), sent_at=self.clock.now(), options={})
            session.add(row)
            session.commit()
            return email, lead.id, row.id

    def events(self, type_: str) -> list[Event]:
        with Session(self.engine) as session:
            return session.exec(select(Event).where(Event.type == type_).order_by(Event.id)).scalars().all()

    def ledger(self) -> list[tuple[str, int]]:
        with Session(self.engine) as session:
            return [(c.cause, c.points) for c in session.exec(select(ScoreChange).order_by(ScoreChange.id)).scalars()]

    def enrollment(self, scenario: str = "clicks") -> Enrollment | None:
        with Session(self.engine) as session:
            return session.exec(select(Enrollment).where(Enrollment.scenario == scenario)).scalars().first()

    def reported_clicks(self) -> int:
        with Session(self.engine) as session:
            return next(r for r in steps(session, "clicks")["clicks"] if r["step"] == "mail")["clicked"]


@pytest.fixture
def world(engine, clock, tmp_path, db_url) -> World:
    return World(engine, clock, tmp_path, db_url)


MINUTE = timedelta(minutes=1)


def test_a_link_replayed_twenty_times_scores_once_and_makes_no_mql(world):
    for _ in range(20):
        world.click(LINK_A, after=MINUTE)
    assert len(world.events("email_clicked")) == 20  # every replay is in the history
    world.tick()
    lead = world.lead()
    assert (lead.score, lead.stage) == (BASE + CLICK + 20, "lead")  # the click once, and the scenario's +20 once
    assert [points for cause, points in world.ledger() if cause == "email_clicked"] == [CLICK]
    assert world.reported_clicks() == 1


def test_a_head_request_is_redirected_and_recorded_as_a_machine_click_worth_nothing(world):
    world.click(LINK_A, after=MINUTE, method="HEAD")
    [machine] = world.events("email_clicked_by_machine")
    assert machine.properties["machine"] == "HEAD request" and machine.properties["link"] == LINK_A
    assert world.events("email_clicked") == [] and world.lead().score == BASE


@pytest.mark.parametrize("agent, reason", [
    ("", "no User-Agent"),
    ("Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", "user agent of a scanner (barracuda)"),
    ("Mimecast-URL-Protect/2.0", "user agent of a scanner (mimecast)"),
    ("python-requests/2.31", "user agent of a scanner (python-)"),
])
def test_no_user_agent_or_a_scanners_is_a_machine_click(world, agent, reason):
    world.click(LINK_A, after=MINUTE, **{"User-Agent": agent})
    [machine] = world.events("email_clicked_by_machine")
    assert machine.properties["machine"] == reason
    assert world.events("email_clicked") == [] and world.lead().score == BASE


def test_a_request_without_a_user_agent_header_at_all_is_a_machine_click(world):
    del world.client.headers["user-agent"]
    world.click(LINK_A, after=MINUTE)
    [machine] = world.events("email_clicked_by_machine")
    assert machine.properties["machine"] == "no User-Agent"


def test_a_click_3_s_after_sending_is_a_machine_click_and_one_a_minute_later_the_leads(world):
    world.click(LINK_A, after=timedelta(seconds=3))
    [machine] = world.events("email_clicked_by_machine")
    assert machine.properties["machine"] == "clicked 3 s after the email was sent"
    assert world.lead().score == BASE
    world.click(LINK_A, after=timedelta(seconds=57))  # the first human click of the link: it scores
    assert len(world.events("email_clicked")) == 1 and world.lead().score == BASE + CLICK


def test_the_window_is_a_setting(world):
    world.settings.machine_click_seconds = 0
    world.client = TestClient(create_app(world.settings, engine=world.engine, workspace=world.workspace, clock=world.clock),
                              headers={"User-Agent": BROWSER})
    world.click(LINK_A, after=timedelta(seconds=3))
    assert len(world.events("email_clicked")) == 1


def test_two_links_within_2_s_are_both_machine_clicks_and_the_first_ones_points_are_taken_back(world):
    world.click(LINK_A, after=MINUTE)
    assert world.lead().score == BASE + CLICK and world.enrollment().due_at == world.clock.now()  # woken by it
    world.click(LINK_B, after=timedelta(seconds=2))
    machines = world.events("email_clicked_by_machine")
    assert [m.properties["link"] for m in machines] == [LINK_A, LINK_B]
    assert all(m.properties["machine"] == "2 clicks of one email within 5 s" for m in machines)
    assert world.events("email_clicked") == []
    assert world.lead().score == BASE
    assert world.ledger()[-2:] == [("email_clicked", CLICK), ("email_clicked_by_machine", -CLICK)]
    assert world.reported_clicks() == 0
    world.tick()  # the wait the first click woke finds no click of the lead's: it sleeps on, `clicked` is false
    enrollment = world.enrollment()
    assert (enrollment.step_id, enrollment.status, enrollment.waiting["kind"]) == ("wait-click", "active", "wait_until")
    assert world.lead().score == BASE


def test_a_machine_click_wakes_nothing_starts_nothing_and_makes_no_clicked_true(world):
    deadline = world.enrollment().due_at
    world.click(LINK_A, after=MINUTE, method="HEAD")
    world.click(LINK_B, after=MINUTE, **{"User-Agent": "Proofpoint URL Defense"})
    assert world.enrollment().due_at == deadline  # no wait woken
    assert world.enrollment("on-click") is None  # no scenario started by `trigger: {event: email_clicked}`
    world.clock.set(deadline)
    world.tick()
    assert world.enrollment().step_id == "quiet" and world.lead().score == BASE  # timed out: never clicked


def test_a_human_clicking_a_then_b_a_minute_later_scores_both(world):
    world.click(LINK_A, after=MINUTE)
    world.click(LINK_B, after=MINUTE)
    assert world.events("email_clicked_by_machine") == []
    assert [cause for cause, _ in world.ledger()].count("email_clicked") == 2
    assert world.enrollment("on-click") is not None  # a real click starts what it triggers
    world.tick()
    assert world.lead().score == BASE + 2 * CLICK + 20  # and makes `clicked: mail` hold
    assert world.reported_clicks() == 1  # distinct leads


def test_a_get_right_after_a_scanners_head_is_the_scanners_too(world):
    world.click(LINK_A, after=MINUTE, method="HEAD")
    world.click(LINK_A, after=timedelta(seconds=1))
    assert len(world.events("email_clicked_by_machine")) == 2 and world.lead().score == BASE
    world.click(LINK_A, after=MINUTE)  # the lead, later
    assert world.lead().score == BASE + CLICK


def test_a_burst_in_one_batch_scores_nothing(world):
    at = world.clock.now() + MINUTE
    base = {"scenario": "clicks", "step_id": "mail", "outbox_id": world.outbox.id}
    committed(world.engine, ingest_events, workspace=world.workspace, events=[IncomingEvent("email_clicked", EMAIL, at, {**base, "link": LINK_A}),
                                                IncomingEvent("email_clicked", EMAIL, at, {**base, "link": LINK_B})], now=at)
    assert len(world.events("email_clicked_by_machine")) == 2 and world.lead().score == BASE
    assert [cause for cause, _ in world.ledger()] == ["form_submitted", "downloaded"]  # nothing given, nothing taken back


def test_after_a_burst_the_links_first_human_click_scores(world):
    world.click(LINK_A, after=MINUTE)
    world.click(LINK_B, after=timedelta(seconds=1))  # both a machine's: A's points taken back
    world.click(LINK_A, after=MINUTE)
    world.click(LINK_A, after=MINUTE)
    assert world.lead().score == BASE + CLICK  # A scores once, for good


def test_a_link_longer_than_an_event_holds_is_followed_and_its_click_kept_cut(world):
    link = "https://relance.example/tarifs?utm_content=" + "x" * 5000
    world.click(link, after=MINUTE)
    [click] = world.events("email_clicked")
    assert click.properties["link"] == link[:4000] and world.lead().score == BASE + CLICK


def test_scoring_yaml_may_not_give_machine_clicks_points(tmp_path):
    (tmp_path / "scoring.yaml").write_text("behaviour:\n  email_clicked: 3\n  email_clicked_by_machine: 1\n", encoding="utf-8")
    _, problems = read_scoring(tmp_path)
    assert len(problems) == 1 and "`email_clicked_by_machine` earns no points" in str(problems[0])


def test_the_request_rules():
    assert machine_request("HEAD", BROWSER) == "HEAD request"
    assert machine_request("GET", "   ") == "no User-Agent"
    assert machine_request("GET", "Mozilla/5.0 (compatible; SafeLinks)") == "user agent of a scanner (safelinks)"
    for human in (BROWSER, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
                  "Mozilla/5.0 (Linux; Android 12; CUBOT KingKong 7) Chrome/120.0 Mobile Safari/537.36",
                  "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"):
        assert machine_request("GET", human) is None, human


@pytest.mark.parametrize("enrolled", [True, False], ids=["waiting-lead", "lead-in-no-scenario"])
def test_concurrent_clicks_of_two_links_are_a_burst_however_the_transactions_interleave(world, monkeypatch, enrolled):
    """A scanner's requests may arrive together: the second transaction waits for the first, then sees its click and
    the score it left (PostgreSQL: the lead is locked while its clicks are read and scored, whether or not it has
    enrollments to lock; SQLite: one writer at a time, and the lead read again once writing)."""
    import relance.ingest as ingest

    first_read, go_on = threading.Event(), threading.Event()
    real = ingest.Engagement

    class Paused(real):  # the first batch stops once it has read the lead's clicks, before it commits
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if threading.current_thread().name == "first":
                first_read.set()
                go_on.wait(60)

    monkeypatch.setattr(ingest, "Engagement", Paused)
    email, before, outbox_id = EMAIL, BASE, world.outbox.id
    if not enrolled:
        (email, _, outbox_id), before = world.another_email(), 0
    at = world.clock.now() + MINUTE
    base = {"scenario": "clicks", "step_id": "mail", "outbox_id": outbox_id}

    def click(link: str) -> None:
        committed(world.engine, ingest_events, workspace=world.workspace, events=[IncomingEvent("email_clicked", email, at, {**base, "link": link})], now=at)

    first = threading.Thread(target=click, args=(LINK_A,), name="first")
    second = threading.Thread(target=click, args=(LINK_B,), name="second")
    first.start()
    assert first_read.wait(60)
    second.start()
    if world.engine.dialect.name == "postgresql":  # let the second go as far as it can: done, or waiting for a lock
        with world.engine.connect() as watch:
            while second.is_alive() and not watch.execute(text(
                    "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")).scalar():
                second.join(0.01)
    else:
        second.join(0.5)  # SQLite: it waits for the first's write lock
    go_on.set()
    first.join(60)
    second.join(60)
    assert len(world.events("email_clicked_by_machine")) == 2
    assert world.lead(email).score == before


# --------------------------------------------------------------------------- the property

requests = st.lists(st.tuples(
    st.sampled_from([LINK_A, LINK_B, LINK_C]),
    st.sampled_from([0, 1, 2, 4, 6, 11, 60, 3600]),  # seconds since the previous request (the first: since sending)
    st.sampled_from(["GET", "GET", "GET", "HEAD"]),
    st.sampled_from([BROWSER, BROWSER, BROWSER, "", "Mimecast-URL-Protect/2.0"]),
), min_size=1, max_size=12)
_leads = iter(range(10**6))


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=requests)
def test_replays_and_machine_clicks_never_earn_more_than_each_link_once(world, requests):
    """However the clicks of one email come (replays, scanners, bursts, the lead), they earn at most each distinct
    link's points once, never less than nothing, and no machine click keeps points."""
    email, lead_id, outbox_id = world.another_email()
    for link, seconds, method, agent in requests:
        world.clock.advance(timedelta(seconds=seconds))
        token = tracking.sign(world.settings.secret_key, kind=tracking.CLICK, outbox_id=outbox_id, lead_id=lead_id,
                              email=email, link=link)
        response = world.client.request(method, f"/c/{token}", headers={"User-Agent": agent}, follow_redirects=False)
        assert response.status_code == 302 and response.headers["location"] == link
    with Session(world.engine) as session:
        score = session.get(Lead, lead_id).score
        kept = {event_id: points for event_id, points in session.execute(text(
            "select event_id, sum(points) from score_change where lead_id = :lead group by event_id"), {"lead": lead_id})}
        types = dict(session.execute(select(Event.id, Event.type).where(Event.lead_id == lead_id)).all())
    assert 0 <= score <= len({link for link, *_ in requests}) * CLICK
    assert all(points == 0 for event_id, points in kept.items() if types[event_id] == "email_clicked_by_machine")
    assert sum(kept.values()) == score
