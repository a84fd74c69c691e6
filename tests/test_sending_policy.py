"""sending.yaml: caps across scenarios, quiet hours and days in the lead's time zone, blackout dates, priorities,
and what happens to an email it holds back (it waits, or is skipped), on both backends.

The property test runs real ticks of three scenarios over virtual days for leads in several time zones and checks
the outbox afterwards with its own reading of the policy (not relance's): no cap exceeded in any window, nothing sent
in a quiet hour, on a quiet day or a blackout date, and every email either sent or skipped with its reason.
`make test` runs it small; `RELANCE_TEST_FULL=1 make test PYTEST_ARGS=tests/test_sending_policy.py` runs 200 examples.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import delete, func, select
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

from recording import RecordingTransport  # tests/recording.py
from relance.cli import app as cli
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.policy import Hold, SendingPolicy, hold
from relance.settings import Settings, get_settings
from relance.store.tables import Enrollment, Outbox
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import PROFESSIONAL_PROPS

FULL = os.environ.get("RELANCE_TEST_FULL") == "1"
UTC = timezone.utc
MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 10:00 in Paris

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}, voici {{ scenario }}/{{ step_id }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""


def _scenario(name: str, asset: str, *, priority: int, held: str = "wait", waits: tuple[str, ...] = ("1d",),
              transactional: str | None = None) -> str:
    lines = [f"scenario: {name}", f"priority: {priority}", f"held: {held}",
             f"trigger: {{event: downloaded, where: {{asset: {asset}}}}}", "steps:"]
    if transactional:
        lines.insert(1, f"transactional: {transactional}")
    for i, wait in enumerate(("0", *waits)):
        if i:
            lines += [f"  - id: pause-{i}", f"    wait: {wait}"]
        lines += [f"  - id: mail-{i}", "    send: hello", f'    subject: "{name} {i}"']
    return "\n".join(lines) + "\n"


def _folder(tmp_path: Path, db_url: str, sending: str, scenarios: dict[str, str]) -> Settings:
    for name in ("scenarios", "templates"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "templates" / "hello.mjml").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / "scenarios" / "sending.yaml").write_text(sending, encoding="utf-8")
    for old in (tmp_path / "scenarios").glob("*.yaml"):
        if old.name != "sending.yaml" and old.stem not in scenarios:
            old.unlink()
    for name, text in scenarios.items():
        (tmp_path / "scenarios" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                    outbox_dir=tmp_path / "outbox", secret_key="k" * 32, public_url="https://t.relance.example")


def _lead(email: str, tz: str, at: datetime) -> IncomingEvent:
    return IncomingEvent("form_submitted", email, at, {"first_name": "Léa", "timezone": tz, **PROFESSIONAL_PROPS}, f"form-{email}")


def _download(email: str, asset: str, at: datetime) -> IncomingEvent:
    return IncomingEvent("downloaded", email, at, {"asset": asset}, f"dl-{email}-{asset}-{at.isoformat()}")


def _outbox(engine) -> list[Outbox]:
    with Session(engine) as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)).scalars())


# --------------------------------------------------------------------------- the rules alone

POLICY = SendingPolicy.model_validate({
    "caps": [{"emails": 1, "per": "1d"}, {"emails": 3, "per": "7d"}],
    "quiet": {"hours": "20:00-08:00", "days": ["sat", "sun"]},
    "blackout": ["2026-12-25", {"from": "2026-08-10", "to": "2026-08-14"}],
})


def test_an_email_goes_at_once_when_nothing_holds_it_back():
    assert hold(POLICY, now=MONDAY, tz="Europe/Paris", sent=[]) is None


def test_a_full_day_cap_waits_until_the_last_send_is_a_day_old():
    held = hold(POLICY, now=MONDAY, tz="Europe/Paris", sent=[MONDAY - timedelta(hours=1)])
    assert held == Hold(MONDAY + timedelta(hours=23), "cap: 1 per 1d")
    early = hold(POLICY, now=MONDAY, tz="Europe/Paris", sent=[MONDAY - timedelta(hours=3)])  # a day on is 07:00 in Paris:
    assert early == Hold(MONDAY + timedelta(hours=22), "cap: 1 per 1d")  # then the quiet hours keep it until 08:00


def test_the_week_cap_counts_the_oldest_of_the_three_sends_in_the_window():
    sent = [MONDAY - timedelta(days=d) for d in (2, 3, 6)]
    held = hold(POLICY, now=MONDAY, tz="Europe/Paris", sent=sent)
    assert held == Hold(MONDAY + timedelta(days=1), "cap: 3 per 1w")  # the send of 6 days ago leaves the week


def test_quiet_hours_run_past_midnight_in_the_lead_time_zone():
    evening = datetime(2026, 1, 6, 21, 0, tzinfo=UTC)  # 22:00 in Paris, 16:00 in New York
    assert hold(POLICY, now=evening, tz="Europe/Paris", sent=[]) == Hold(
        datetime(2026, 1, 7, 7, 0, tzinfo=UTC), "quiet hours: 20:00-08:00 (Europe/Paris)")
    assert hold(POLICY, now=evening, tz="America/New_York", sent=[]) is None


def test_a_lead_without_a_known_time_zone_takes_the_policy_one():
    evening = datetime(2026, 1, 6, 21, 0, tzinfo=UTC)
    for unknown in ("", None, "Mars/Olympus"):
        assert hold(POLICY, now=evening, tz=unknown, sent=[]).reason == "quiet hours: 20:00-08:00 (Europe/Paris)"


def test_a_weekend_and_a_blackout_push_to_the_next_open_morning():
    friday_night = datetime(2026, 12, 24, 21, 0, tzinfo=UTC)  # Thursday 22:00 Paris; Friday 25th is a blackout
    held = hold(POLICY, now=friday_night, tz="Europe/Paris", sent=[])
    assert held.until == datetime(2026, 12, 28, 7, 0, tzinfo=UTC)  # Monday 08:00 Paris
    assert held.reason.startswith("quiet hours")
    assert hold(POLICY, now=datetime(2026, 8, 11, 10, tzinfo=UTC), tz="Europe/Paris", sent=[]).until == \
        datetime(2026, 8, 17, 6, 0, tzinfo=UTC)  # a blackout span, then the weekend; 08:00 summer time


def test_quiet_hours_end_at_the_local_hour_across_a_change_of_clocks():
    saturday = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # Paris moves to summer time on Sunday 29 March
    held = hold(POLICY, now=saturday, tz="Europe/Paris", sent=[])
    assert held.until.astimezone(ZoneInfo("Europe/Paris")).time() == time(8, 0)
    assert held.until == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)


def test_an_email_yields_when_the_ones_of_higher_priority_fill_the_cap():
    held = hold(POLICY, now=MONDAY, tz="Europe/Paris", sent=[], ahead=1)
    assert held == Hold(MONDAY, "priority: 1 per 1d, and 1 email(s) of higher priority go first")
    assert hold(SendingPolicy.model_validate({"caps": [{"emails": 2, "per": "1d"}]}), now=MONDAY, tz=None, sent=[],
                ahead=1) is None  # room for both


# --------------------------------------------------------------------------- sending.yaml read like the rest


def test_relance_validate_names_each_problem_of_sending_yaml_at_its_line(tmp_path, monkeypatch):
    settings = _folder(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", (
        "caps:\n  - {emails: 0, per: 1d}\n  - {emails: 2, per: 10m}\nquiet:\n  hours: '08:00-08:00'\n"
        "  days: [mon, tue, wed, thu, fri, sat, sun]\ntimezone: Europe/Pariss\nblackout: [2026-13-01]\nheld: later\n"),
        {"a": _scenario("a", "a", priority=50)})
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(settings.scenarios_dir))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(settings.templates_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["validate"], catch_exceptions=False)
    finally:
        get_settings.cache_clear()
    path = settings.scenarios_dir / "sending.yaml"
    assert result.exit_code == 1, result.output
    for line, words in ((2, "greater than or equal to 1"), (3, "at least 1h"), (5, "same time"), (6, "every day is quiet"),
                        (7, "unknown time zone 'Europe/Pariss'"), (8, "blackout"), (9, "held")):
        assert any(out.startswith(f"{path}:{line}:") and words in out for out in result.output.splitlines()), (line, result.output)


def test_a_broken_sending_yaml_stops_every_tick_with_its_problems(tmp_path):
    settings = _folder(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", "caps: [{emails: 1, per: 1 jour}]\n",
                       {"a": _scenario("a", "a", priority=50)})
    with pytest.raises(Exception) as raised:
        load_workspace(settings)
    assert f"{settings.scenarios_dir / 'sending.yaml'}:1:" in str(raised.value)


def test_the_json_schema_of_sending_yaml_is_printed_for_editors():
    result = CliRunner().invoke(cli, ["schema", "--sending"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert '"caps"' in result.output and '"quiet"' in result.output and "relance sending policy" in result.output


def test_the_shipped_sending_yaml_is_valid_and_caps_marketing_email():
    policy = load_workspace(Settings(scenarios_dir=Path(__file__).resolve().parents[1] / "scenarios",
                                     templates_dir=Path(__file__).resolve().parents[1] / "templates" / "emails")).sending
    assert policy.caps and policy.quiet.hours and policy.holds_anything


# --------------------------------------------------------------------------- real ticks, both backends

SENDING = """caps: [{emails: 1, per: 1d}]
quiet: {hours: "20:00-08:00"}
"""


def _world(tmp_path, db_url, engine, clock, sending=SENDING, **scenarios):
    settings = _folder(tmp_path, db_url, sending, scenarios)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    return settings, workspace, TemplateLibrary(settings.templates_dir)


def _tick(engine, settings, workspace, templates, transport, now, *names):
    return {name: run_tick_inline(engine, settings, scenario=name, now=now, workspace=workspace, templates=templates,
                                  transport=transport) for name in names}


def test_two_scenarios_the_same_day_send_one_email_and_the_other_waits_for_the_next_day(engine, db_url, clock, tmp_path):
    settings, workspace, templates = _world(tmp_path, db_url, engine, clock,
                                            guide=_scenario("guide", "guide", priority=50, waits=()),
                                            webinar=_scenario("webinar", "webinar", priority=50, waits=()))
    now = clock.now()
    committed(engine, ingest_events, workspace=workspace, now=now, events=[
        _lead("lea@acme.example", "Europe/Paris", now), _download("lea@acme.example", "guide", now),
        _download("lea@acme.example", "webinar", now)])
    transport = RecordingTransport()
    reports = _tick(engine, settings, workspace, templates, transport, now + timedelta(minutes=1), "guide", "webinar")
    assert [e.subject for e in transport.sent] == ["guide 0"]
    assert (reports["guide"].sent, reports["webinar"].sent, reports["webinar"].deferred) == (1, 0, 1)
    waiting = [r for r in _outbox(engine) if r.status == "pending"]
    assert [(r.scenario, r.held) for r in waiting] == [("webinar", "cap: 1 per 1d")]
    assert waiting[0].hold_until == now + timedelta(days=1, minutes=1)
    with Session(engine) as session:  # the lead's path is unchanged: both enrollments went on to their end
        assert set(session.exec(select(Enrollment.status)).scalars()) == {"completed"}

    _tick(engine, settings, workspace, templates, transport, now + timedelta(hours=23), "guide", "webinar")
    assert len(transport.sent) == 1  # still inside the day
    _tick(engine, settings, workspace, templates, transport, now + timedelta(days=1, minutes=5), "guide")
    assert [e.subject for e in transport.sent] == ["guide 0", "webinar 0"]  # sent by the other scenario's tick
    sent = {r.scenario: r for r in _outbox(engine)}
    assert sent["webinar"].status == "sent" and sent["webinar"].held == "cap: 1 per 1d"  # the reason stays on record


def test_the_higher_priority_goes_first_whichever_scenario_ticks_first(engine, db_url, clock, tmp_path):
    settings, workspace, templates = _world(tmp_path, db_url, engine, clock,
                                            newsletter=_scenario("newsletter", "news", priority=10, waits=()),
                                            hot=_scenario("hot", "pricing", priority=90, waits=()))
    night = datetime(2026, 1, 6, 22, 0, tzinfo=UTC)  # 23:00 in Paris: the hot email is written in the quiet hours
    clock.current = night
    committed(engine, ingest_events, workspace=workspace, now=night, events=[
        _lead("lea@acme.example", "Europe/Paris", night), _download("lea@acme.example", "pricing", night)])
    transport = RecordingTransport()
    _tick(engine, settings, workspace, templates, transport, night + timedelta(minutes=1), "newsletter", "hot")
    assert transport.sent == [] and [r.held for r in _outbox(engine)] == ["quiet hours: 20:00-08:00 (Europe/Paris)"]

    morning = datetime(2026, 1, 7, 7, 5, tzinfo=UTC)  # 08:05 in Paris: the newsletter's email is written now, and its
    committed(engine, ingest_events, workspace=workspace, now=morning,  # tick comes first
              events=[_download("lea@acme.example", "news", morning - timedelta(minutes=1))])
    reports = _tick(engine, settings, workspace, templates, transport, morning, "newsletter")
    assert [e.subject for e in transport.sent] == ["hot 0"], "the hot lead's email goes, the newsletter yields"
    assert reports["newsletter"].leftovers == 1  # the hot email, sent by the same tick's pending pass (highest first)
    assert reports["newsletter"].held["priority: 1 per 1d, and 1 email(s) of higher priority go first"] == 1
    rows = {r.scenario: r for r in _outbox(engine)}
    assert rows["newsletter"].status == "pending" and rows["newsletter"].held == "cap: 1 per 1d"
    assert rows["newsletter"].hold_until == morning + timedelta(days=1)
    _tick(engine, settings, workspace, templates, transport, morning + timedelta(days=1, minutes=1), "hot")
    assert [e.subject for e in transport.sent] == ["hot 0", "newsletter 0"]


def test_a_scenario_that_skips_what_is_held_skips_it_with_the_reason(engine, db_url, clock, tmp_path):
    settings, workspace, templates = _world(tmp_path, db_url, engine, clock,
                                            guide=_scenario("guide", "guide", priority=80, waits=()),
                                            promo=_scenario("promo", "promo", priority=20, held="skip", waits=()))
    now = clock.now()
    committed(engine, ingest_events, workspace=workspace, now=now, events=[
        _lead("lea@acme.example", "Europe/Paris", now), _download("lea@acme.example", "guide", now),
        _download("lea@acme.example", "promo", now)])
    transport = RecordingTransport()
    reports = _tick(engine, settings, workspace, templates, transport, now + timedelta(minutes=1), "guide", "promo")
    assert [e.subject for e in transport.sent] == ["guide 0"] and reports["promo"].withheld == 1
    promo = next(r for r in _outbox(engine) if r.scenario == "promo")
    assert promo.status == "skipped" and promo.held == "cap: 1 per 1d" and "held: skip" in promo.error
    _tick(engine, settings, workspace, templates, transport, now + timedelta(days=2), "guide", "promo")
    assert len(transport.sent) == 1  # skipped is for good


def test_transactional_email_is_neither_counted_nor_held(engine, db_url, clock, tmp_path):
    settings, workspace, templates = _world(tmp_path, db_url, engine, clock,
                                            guide=_scenario("guide", "guide", priority=50, waits=()),
                                            receipt=_scenario("receipt", "receipt", priority=50, waits=(),
                                                              transactional="the document the lead asked for"))
    night = datetime(2026, 1, 6, 22, 0, tzinfo=UTC)
    clock.current = night - timedelta(hours=12)
    committed(engine, ingest_events, workspace=workspace, now=clock.now(), events=[
        _lead("lea@acme.example", "Europe/Paris", clock.now()), _download("lea@acme.example", "guide", clock.now())])
    transport = RecordingTransport()
    _tick(engine, settings, workspace, templates, transport, clock.now() + timedelta(minutes=1), "guide")
    committed(engine, ingest_events, workspace=workspace, now=night, events=[_download("lea@acme.example", "receipt", night)])
    _tick(engine, settings, workspace, templates, transport, night + timedelta(minutes=1), "receipt")
    assert [e.subject for e in transport.sent] == ["guide 0", "receipt 0"]  # at night, a second one the same day
    receipt = next(r for r in _outbox(engine) if r.scenario == "receipt")
    assert receipt.marketing is False and receipt.held is None


def test_a_held_email_does_not_expire_while_it_waits(engine, db_url, clock, tmp_path):
    weekly = "caps: [{emails: 1, per: 7d}]\n"
    settings, workspace, templates = _world(tmp_path, db_url, engine, clock, sending=weekly,
                                            a=_scenario("a", "a", priority=50, waits=()),
                                            b=_scenario("b", "b", priority=50, waits=()))
    now = clock.now()
    committed(engine, ingest_events, workspace=workspace, now=now, events=[
        _lead("lea@acme.example", "Europe/Paris", now), _download("lea@acme.example", "a", now),
        _download("lea@acme.example", "b", now)])
    transport = RecordingTransport()
    _tick(engine, settings, workspace, templates, transport, now + timedelta(minutes=1), "a", "b")
    for day in (3, 6):  # more than the 48 h a pending email lives, but held: it waits
        _tick(engine, settings, workspace, templates, transport, now + timedelta(days=day), "a")
    _tick(engine, settings, workspace, templates, transport, now + timedelta(days=7, minutes=2), "a")
    assert [e.subject for e in transport.sent] == ["a 0", "b 0"]


# --------------------------------------------------------------------------- the property, both backends

ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", ""]
LEADS = [f"lead{i}@acme.example" for i in range(4)]
CAPS = [[{"emails": 1, "per": "1d"}], [{"emails": 1, "per": "1d"}, {"emails": 2, "per": "3d"}],
        [{"emails": 2, "per": "1d"}, {"emails": 3, "per": "7d"}]]
QUIET_HOURS = [None, "20:00-08:00", "12:00-14:00", "22:00-06:00"]
POLICIES = st.fixed_dictionaries({
    "caps": st.sampled_from(CAPS),
    "quiet": st.fixed_dictionaries({"hours": st.sampled_from(QUIET_HOURS),
                                    "days": st.lists(st.sampled_from(["sat", "sun", "wed"]), unique=True, max_size=2)}),
    "blackout": st.lists(st.integers(0, 6).map(lambda d: (MONDAY + timedelta(days=d)).date().isoformat()), max_size=1),
})
DOWNLOADS = st.lists(st.tuples(st.integers(0, len(LEADS) - 1), st.sampled_from(["a", "b", "c"]), st.integers(0, 72)),
                     min_size=1, max_size=8)
PLAN = st.tuples(POLICIES, st.lists(st.sampled_from(ZONES), min_size=len(LEADS), max_size=len(LEADS)), DOWNLOADS,
                 st.sampled_from([1, 2, 3, 5]), st.sampled_from(["wait", "skip"]))
SCENARIOS = {"a": ("a", 80), "b": ("b", 50), "c": ("c", 20)}


def _quiet_at(policy: dict, tz: str, at: datetime) -> bool:
    """The test's own reading of the policy: is `at` quiet for a lead of `tz`?"""
    local = at.astimezone(ZoneInfo(tz or "Europe/Paris"))
    if local.date().isoformat() in policy["blackout"]:
        return True
    if ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()] in policy["quiet"]["days"]:
        return True
    hours = policy["quiet"]["hours"]
    if not hours:
        return False
    start, end = (time.fromisoformat(x) for x in hours.split("-"))
    now = local.time().replace(tzinfo=None)
    return start <= now < end if start < end else (now >= start or now < end)


def _over_a_cap(policy: dict, sends: list[datetime]) -> str | None:
    for cap in policy["caps"]:
        per = timedelta(days=int(cap["per"][:-1]))
        for t in sends:
            inside = [s for s in sends if t - per < s <= t]
            if len(inside) > cap["emails"]:
                return f"{len(inside)} emails within {cap['per']} up to {t}"
    return None


def _clear(engine) -> None:
    with Session(engine) as session:
        for table in reversed(SQLModel.metadata.sorted_tables):
            session.execute(delete(table))
        session.commit()


def test_no_cap_or_quiet_time_is_ever_broken_and_no_email_is_lost(engine, db_url, clock, tmp_path):
    seen = defaultdict(int)
    examples = itertools.count()

    @hypothesis_settings(max_examples=200 if FULL else 8, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(PLAN)
    def run(plan):
        policy, zones, downloads, cadence, c_held = plan
        _clear(engine)
        folder = tmp_path / f"example-{next(examples)}"
        folder.mkdir()
        settings = _folder(folder, db_url, json.dumps(policy), {
            name: _scenario(name, asset, priority=priority, held=c_held if name == "c" else "wait", waits=("1d", "2d"))
            for name, (asset, priority) in SCENARIOS.items()})
        workspace, templates, transport = load_workspace(settings), TemplateLibrary(settings.templates_dir), RecordingTransport()
        committed(engine, sync_scenarios, now=MONDAY, workspace=workspace)
        committed(engine, ingest_events, workspace=workspace, now=MONDAY,
                  events=[_lead(email, zone, MONDAY) for email, zone in zip(LEADS, zones)])
        events = sorted((MONDAY + timedelta(hours=h, minutes=7), LEADS[i], asset) for i, asset, h in downloads)
        now, order, drained = MONDAY, list(SCENARIOS), False
        while now < MONDAY + timedelta(days=40):
            due, events = [e for e in events if e[0] <= now], [e for e in events if e[0] > now]
            if due:
                committed(engine, ingest_events, workspace=workspace, now=now,
                          events=[_download(email, asset, at) for at, email, asset in due])
            for name in order:
                run_tick_inline(engine, settings, scenario=name, now=now, workspace=workspace, templates=templates,
                                transport=transport)
            order = order[1:] + order[:1]  # each scenario ticks first in turn
            with Session(engine) as session:
                next_due = session.execute(select(func.min(Enrollment.due_at)).where(Enrollment.status == "active")).scalar_one()
                next_hold = session.execute(select(func.min(func.coalesce(Outbox.hold_until, Outbox.created_at)))
                                            .where(Outbox.status == "pending")).scalar_one()
            moments = [m for m in (next_due, next_hold, events[0][0] if events else None) if m is not None]
            if not moments:
                drained = True
                break
            now = max(now + timedelta(hours=cadence), min(moments))  # ticks every `cadence` hours, or when something is due
        assert drained, "everything settles within 40 days"

        rows = [r for r in _outbox(engine) if r.kind == "lead"]
        with Session(engine) as session:
            enrollments = session.exec(select(Enrollment.status)).scalars().all()
        assert set(enrollments) <= {"completed"} and len(rows) == 3 * len(enrollments), "every lead went its whole way"
        for row in rows:  # no email lost: sent, or skipped with its reason
            assert row.status == "sent" or (row.status == "skipped" and row.held and row.scenario == "c"), (row.status, row.held)
        for email, zone in zip(LEADS, zones):
            sends = sorted(r.attempted_at for r in rows if r.to_address == email and r.status == "sent")
            assert _over_a_cap(policy, sends) is None, (email, _over_a_cap(policy, sends), policy)
            for at in sends:
                assert not _quiet_at(policy, zone, at), (email, zone, at, policy)
        for row in rows:
            seen["deferred"] += row.status == "sent" and row.held is not None
            seen["skipped"] += row.status == "skipped"
            seen["yielded"] += (row.held or "").startswith("priority")
            seen["quiet"] += (row.held or "").startswith(("quiet", "blackout"))

    run()
    assert seen["deferred"] > 0, dict(seen)


def test_the_report_the_tick_log_and_lead_show_say_what_was_held_back_and_why(engine, db_url, clock, tmp_path, monkeypatch):
    from relance.report import build_report
    from relance.tick_figures import summary

    settings, workspace, templates = _world(tmp_path, db_url, engine, clock,
                                            guide=_scenario("guide", "guide", priority=50, waits=()),
                                            webinar=_scenario("webinar", "webinar", priority=50, waits=()),
                                            promo=_scenario("promo", "promo", priority=10, held="skip", waits=()))
    now = clock.now()
    committed(engine, ingest_events, workspace=workspace, now=now, events=[
        _lead("lea@acme.example", "Europe/Paris", now),
        *(_download("lea@acme.example", asset, now) for asset in ("guide", "webinar", "promo"))])
    reports = _tick(engine, settings, workspace, templates, RecordingTransport(), now + timedelta(minutes=1),
                    "guide", "webinar", "promo")
    assert summary(reports["webinar"]).endswith(", 1 deferred by sending.yaml (cap: 1 per 1d 1)")
    assert ", 1 skipped by sending.yaml (cap: 1 per 1d 1)" in summary(reports["promo"])
    assert reports["webinar"].as_dict()["deferred"] == 1 and reports["promo"].as_dict()["withheld"] == 1
    with Session(engine) as session:
        held = build_report(session, now=now + timedelta(hours=1))["held_back"]
    assert held == {"promo": {"deferred": 0, "waiting": 0, "skipped": 1, "reasons": {"cap": 1}},
                    "webinar": {"deferred": 1, "waiting": 1, "skipped": 0, "reasons": {"cap": 1}}}

    for name, value in {"RELANCE_DATABASE_URL": db_url, "RELANCE_SCENARIOS_DIR": str(settings.scenarios_dir),
                        "RELANCE_TEMPLATES_DIR": str(settings.templates_dir)}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(cli, ["lead", "show", "lea@acme.example"], catch_exceptions=False)
        report = CliRunner().invoke(cli, ["report", "--now", (now + timedelta(hours=1)).isoformat()], catch_exceptions=False)
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    assert "held back by sending.yaml until 2026-01-06 09:01" in shown.output and "cap: 1 per 1d" in shown.output
    assert report.exit_code == 0, report.output
    assert "Held back by sending.yaml" in report.output and "webinar: cap 1" in report.output
