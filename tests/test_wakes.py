"""A `wait_until` on the lead's state (score, grade, temperature, stage, tag, field) wakes when it comes true,
whatever made it true: an event's points, a sales answer, decay, a step of another scenario, a CSV import.

Every test puts a lead to sleep at `wait` (30 days of timeout), changes the lead one hour later, and checks
that the wait is due at that moment and that the next tick takes the lead through; both backends.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from sqlmodel import Session

from relance.decay import decay_scores
from relance.email.templates import TemplateLibrary
from relance.importer import import_leads, parse_leads_csv
from relance.ingest import IncomingEvent, ingest_events
from relance.leads import grade_all
from relance.plans import sync_scenarios
from relance.sales import Answer, answer, open_handoff
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Enrollment, Lead, StepLog
from relance.tick import run_tick_inline
from relance.wakes import wake_for_lead_changes
from relance.workspace import load_workspace
from tests.units import committed

EMAIL = "lea@acme.example"

SCORING = """\
behaviour:
  downloaded: 45
  email_clicked: 5
fit:
  job_title: {"(?i)directrice": 60}
grades: {A: 80, B: 50, C: 30}
temperature: {hot: 60, warm: 30}
mql: {score_at_least: 40, grade_at_least: D}
handoff: {score_at_least: 1000, grade_at_least: A}
decay: {every: 7d, percent: 80}
"""

WAITER = """\
scenario: waiter
trigger: {{event: trial_started}}
steps:
  - id: wait
    wait_until: {condition}
    timeout: 30d
    on_timeout: gave-up
  - id: go-on
    set: {{field: {{went_on: true}}}}
    next: done
  - id: gave-up
    set: {{field: {{gave_up: true}}}}
  - id: cool-off
    wait: 3d
  - id: done
    end: true
"""

# another scenario whose steps change the lead the waiter waits on
CHANGER = """\
scenario: changer
trigger: {event: demo_requested}
steps:
  - id: mark
    set: {tag: vip, field: {plan: pro}}
  - id: points
    score: +25
  - id: sign
    set: {stage: customer}
"""


def _world(tmp_path: Path, db_url: str, condition: str) -> Settings:
    for name in ("scenarios", "templates"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "scenarios" / "scoring.yaml").write_text(SCORING, encoding="utf-8")
    (tmp_path / "scenarios" / "waiter.yaml").write_text(WAITER.format(condition=condition), encoding="utf-8")
    (tmp_path / "scenarios" / "changer.yaml").write_text(CHANGER, encoding="utf-8")
    return Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                    outbox_dir=tmp_path / "outbox", transport="null")


def _asleep(engine, settings, clock, *events: IncomingEvent, **profile):
    """The lead, after `events`, enters the waiter and falls asleep at `wait`; returns the workspace."""
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        upsert_lead(session, email=EMAIL, now=clock.now(), first_name="Léa", **profile)
        session.commit()
    committed(engine, ingest_events, workspace=workspace, events=[*events, IncomingEvent("trial_started", EMAIL, clock.now(), {})], now=clock.now())
    run_tick_inline(engine, settings, scenario="waiter", now=clock.now(), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    assert _path(engine) == [("wait", "entered"), ("wait", "waiting")], "the lead must wait before the change"
    assert _waiter(engine).due_at == clock.now() + timedelta(days=30)
    return workspace


def _waiter(engine) -> Enrollment:
    with Session(engine) as session:
        return session.exec(select(Enrollment).where(Enrollment.scenario == "waiter")).scalars().one()


def _path(engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(StepLog).where(StepLog.scenario == "waiter").order_by(StepLog.id)).scalars()
        return [(r.step_id, r.outcome) for r in rows]


def _goes_on_at_the_next_tick(engine, settings, workspace, changed_at) -> None:
    """The wait is due at the change; a tick a minute later takes the lead past it (29 days before its timeout)."""
    assert _waiter(engine).due_at == changed_at, "the change did not wake the wait"
    run_tick_inline(engine, settings, scenario="waiter", now=changed_at + timedelta(minutes=1), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    assert _path(engine)[2:] == [("wait", "woken"), ("go-on", "set"), ("done", "left")]
    with Session(engine) as session:
        assert session.exec(select(Lead.fields).where(Lead.email == EMAIL)).scalars().one()["went_on"] is True


# --------------------------------------------------------------------------- an event's points


@pytest.mark.parametrize("condition", [
    "{score_at_least: 20}",
    "{temperature: warm}",
    "{stage_in: [mql]}",  # the download's 45 points cross the MQL line
    "{any: [{tag: never}, {score_at_least: 40}]}",
    "{all: [{score_at_least: 20}, {visited: /tarifs}]}",  # the visit came first and did not make it hold
])
def test_an_events_points_wake_a_wait_on_the_lead_state(engine, db_url, tmp_path, clock, condition):
    settings = _world(tmp_path, db_url, condition)
    workspace = _asleep(engine, settings, clock)
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("page_visited", EMAIL, clock.now(), {"path": "/tarifs"})], now=clock.advance(timedelta(minutes=30)))
    run_tick_inline(engine, settings, scenario="waiter", now=clock.advance(timedelta(minutes=1)), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    changed_at = clock.advance(timedelta(minutes=30))
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("downloaded", EMAIL, changed_at, {"asset": "guide"})], now=changed_at)
    _goes_on_at_the_next_tick(engine, settings, workspace, changed_at)


def test_a_change_that_does_not_make_the_condition_hold_leaves_the_wait_asleep(engine, db_url, tmp_path, clock):
    settings = _world(tmp_path, db_url, "{score_at_least: 20}")
    workspace = _asleep(engine, settings, clock)
    deadline = _waiter(engine).due_at
    changed_at = clock.advance(timedelta(hours=1))
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("email_clicked", EMAIL, changed_at, {})], now=changed_at)  # 5 < 20
    assert _waiter(engine).due_at == deadline
    run_tick_inline(engine, settings, scenario="waiter", now=changed_at + timedelta(minutes=1), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    assert _path(engine) == [("wait", "entered"), ("wait", "waiting")]


# --------------------------------------------------------------------------- a sales answer


@pytest.mark.parametrize("verdict, condition", [
    (Answer("accept", "marc@acme.example"), "{stage_in: [sql]}"),
    (Answer("reject", "marc@acme.example", reason="no-budget"), "{stage_in: [nurturing]}"),
    (Answer("later", "marc@acme.example"), "{not: {stage_in: [sql-pending, lead]}}"),
])
def test_a_sales_answer_wakes_a_wait_on_the_stage(engine, db_url, tmp_path, clock, verdict, condition):
    settings = _world(tmp_path, db_url, condition)
    workspace = _asleep(engine, settings, clock)
    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == EMAIL)).scalars().one()
        open_handoff(session, lead, scoring=workspace.scoring, now=clock.now(), source="test")
        session.commit()
    changed_at = clock.advance(timedelta(hours=1))
    with Session(engine) as session:
        answer(session, email=EMAIL, reply=verdict, scoring=workspace.scoring, now=changed_at)
        session.commit()
    _goes_on_at_the_next_tick(engine, settings, workspace, changed_at)


# --------------------------------------------------------------------------- decay


@pytest.mark.parametrize("condition", ["{not: {score_at_least: 10}}", "{temperature: cold}"])
def test_decay_wakes_a_wait_for_the_score_to_fall(engine, db_url, tmp_path, clock, condition):
    settings = _world(tmp_path, db_url, condition)
    workspace = _asleep(engine, settings, clock, IncomingEvent("downloaded", EMAIL, clock.now(), {"asset": "guide"}))
    changed_at = clock.advance(timedelta(days=8))  # idle a week: 45 points lose 80 %
    assert committed(engine, decay_scores, scoring=workspace.scoring, now=changed_at).leads == 1
    _goes_on_at_the_next_tick(engine, settings, workspace, changed_at)


# --------------------------------------------------------------------------- a step of another scenario


@pytest.mark.parametrize("condition", [
    "{tag: vip}",
    "{field: {plan: pro}}",
    "{score_at_least: 25}",
    "{stage_in: [customer]}",
    "{all: [{tag: vip}, {score_at_least: 20}, {field: {plan: pro}}]}",
])
def test_a_step_of_another_scenario_wakes_a_wait_on_what_it_changed(engine, db_url, tmp_path, clock, condition):
    settings = _world(tmp_path, db_url, condition)
    workspace = _asleep(engine, settings, clock)
    deadline = _waiter(engine).due_at
    changed_at = clock.advance(timedelta(hours=1))
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("demo_requested", EMAIL, changed_at, {})], now=changed_at)
    assert _waiter(engine).due_at == deadline, "the demo request alone changes nothing awaited"
    run_tick_inline(engine, settings, scenario="changer", now=changed_at, workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    _goes_on_at_the_next_tick(engine, settings, workspace, changed_at)


# --------------------------------------------------------------------------- a CSV import


@pytest.mark.parametrize("grading", ["as the rows are written", "afterwards"])
def test_a_csv_import_that_raises_the_grade_wakes_a_wait_on_the_grade(engine, db_url, tmp_path, clock, grading):
    settings = _world(tmp_path, db_url, "{grade_at_least: B}")
    workspace = _asleep(engine, settings, clock, job_title="Stagiaire")
    changed_at = clock.advance(timedelta(hours=1))
    parsed = parse_leads_csv(f"email,job_title\n{EMAIL},Directrice marketing\n", source=None)
    with Session(engine) as session:
        if grading == "as the rows are written":  # what `relance import` does, on the test's clock
            import_leads(session, parsed, now=changed_at, scoring=workspace.scoring, commit=True)
        else:  # a scoring.yaml changed: grade_all
            import_leads(session, parsed, now=changed_at)
            grade_all(session, workspace.scoring, emails=[row.email for row in parsed.rows], now=changed_at)
        session.commit()
    _goes_on_at_the_next_tick(engine, settings, workspace, changed_at)


# --------------------------------------------------------------------------- the HTTP API


@pytest.mark.parametrize("condition, handed_off, path, body", [
    ("{score_at_least: 20}", False, "/events", {"type": "downloaded", "email": EMAIL, "properties": {"asset": "guide"}}),
    ("{stage_in: [mql]}", False, "/events", {"type": "downloaded", "email": EMAIL, "properties": {"asset": "guide"}}),
    ("{stage_in: [sql]}", True, f"/sales/{EMAIL}/accept", {"by": "marc@acme.example"}),
    ("{stage_in: [customer]}", True, f"/sales/{EMAIL}/won", {"by": "marc@acme.example", "amount": 1200}),
    ("{stage_in: [nurturing]}", True, f"/sales/{EMAIL}/lost", {"by": "marc@acme.example", "reason": "price"}),
])
def test_what_the_api_changes_of_a_lead_wakes_a_wait_on_it(engine, db_url, tmp_path, clock, condition, handed_off, path, body):
    """An event, a sales answer, a won or lost deal, each posted over HTTP, ends a wait that it makes hold."""
    from fastapi.testclient import TestClient

    from relance.api.app import create_app

    settings = _world(tmp_path, db_url, condition).model_copy(update={"api_token": "t" * 32, "secret_key": "k" * 32})
    workspace = _asleep(engine, settings, clock)
    if handed_off:
        with Session(engine) as session:
            lead = session.exec(select(Lead).where(Lead.email == EMAIL)).scalars().one()
            open_handoff(session, lead, scoring=workspace.scoring, now=clock.now(), source="test")
            session.commit()
    changed_at = clock.advance(timedelta(hours=1))
    client = TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock))
    response = client.post(path, json=body, headers={"Authorization": "Bearer " + "t" * 32})
    assert response.status_code == 200, response.text
    _goes_on_at_the_next_tick(engine, settings, workspace, changed_at)


# --------------------------------------------------------------------------- a wake racing a tick


def test_a_wake_waits_for_the_tick_advancing_the_enrollment_and_never_undoes_its_move(engine, db_url, tmp_path, clock):
    """A tick times the wait out (moving the lead on to a 3-day pause) while, on a clock a minute behind, a change
    raises the score: the wake waits for the tick's commit, then sees the pause and leaves it alone."""
    settings = _world(tmp_path, db_url, "{score_at_least: 20}")
    workspace = _asleep(engine, settings, clock)
    enrollment = _waiter(engine)
    deadline = enrollment.due_at
    pause_until = deadline + timedelta(days=3)
    with Session(engine) as tick:  # the tick, mid-transaction: the enrollment is its (row lock, or SQLite's write lock)
        tick.execute(update(Enrollment).where(Enrollment.id == enrollment.id).values(
            step_id="cool-off", due_at=pause_until, step_entered_at=deadline,
            waiting={"step_id": "cool-off", "kind": "wait", "deadline": pause_until.isoformat(), "event_types": [], "state": []}))
        woken: list[int] = []

        def change() -> None:
            with Session(engine) as session:
                session.execute(update(Lead).where(Lead.id == enrollment.lead_id).values(score=25))
                woken.append(wake_for_lead_changes(session, [enrollment.lead_id], scoring=workspace.scoring,
                                                   now=deadline - timedelta(minutes=1)))
                session.commit()

        changer = threading.Thread(target=change)
        changer.start()
        changer.join(timeout=1.0)
        assert changer.is_alive(), "the wake did not wait for the tick holding the enrollment"
        tick.commit()
    changer.join(timeout=30)
    assert woken == [0]
    after = _waiter(engine)
    assert (after.step_id, after.due_at) == ("cool-off", pause_until), "the wake undid the tick's move (a double advance)"


def test_a_tick_changing_leads_while_their_events_arrive_wakes_every_wait_and_deadlocks_nothing(engine, db_url, tmp_path, clock):
    """The changer's tick tags 400 leads while clicks of the same leads are ingested: neither waits for the other
    in a cycle (no deadlock error), and every waiter wakes, whichever of the two held its enrollment."""
    settings = _world(tmp_path, db_url, "{tag: vip}")
    workspace = load_workspace(settings)
    now = clock.now()
    committed(engine, sync_scenarios, now=now, workspace=workspace)
    emails = [f"lead{i}@acme.example" for i in range(400)]
    with Session(engine) as session:
        session.execute(insert(Lead), [dict(email=e, created_at=now, updated_at=now, fields={}, tags=[]) for e in emails])
        session.commit()
    for kind in ("trial_started", "demo_requested"):  # enter the waiter, fall asleep; then enter the changer
        committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent(kind, e, now, {}) for e in emails], now=now)
        if kind == "trial_started":
            run_tick_inline(engine, settings, scenario="waiter", now=now, workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    errors: list[str] = []

    def guarded(work):
        def run() -> None:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(repr(exc)[:300])
        return threading.Thread(target=run)

    def clicks() -> None:
        for start in range(0, len(emails), 50):
            committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("email_clicked", e, now, {"n": start})
                                            for e in reversed(emails[start:start + 50])], now=now)

    workers = [guarded(lambda: run_tick_inline(engine, settings, scenario="changer", now=now, workspace=workspace, batch_size=50, templates=TemplateLibrary(settings.templates_dir))),
               guarded(clicks)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert errors == []
    with Session(engine) as session:
        asleep = session.exec(select(Enrollment.id).where(Enrollment.scenario == "waiter", Enrollment.due_at > now)).scalars().all()
    assert asleep == [], f"{len(asleep)} of {len(emails)} waits on the tag were not woken"
