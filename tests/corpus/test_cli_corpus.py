"""Bad input through `relance event`, on both backends: each case is one sentence naming the option (TYPE, --lead,
--at, --now, --key, --prop NAME), exit code 1 or 2, no traceback, and nothing stored (every table counted)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

from relance.cli import app
from relance.clock import FrozenClock
from relance.plans import sync_scenarios
from relance.settings import get_settings
from relance.store.db import make_engine, migrate
from relance.store.repo import upsert_lead
from relance.workspace import load_workspace
from tests.conftest import module_database
from tests.units import committed

ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-01-05T09:00:00+00:00"
LEAD = ["--lead", "lea@acme.example"]
FORM = ["form_submitted", "--lead", "new@globex.example"]

CASES = [
    ("email-not-an-email", ["form_submitted", "--lead", "not-an-email"], ["--lead", "is not an email address"]),
    ("email-crlf-bcc", ["form_submitted", "--lead", "a@x.example\r\nbcc: victim@evil.example"], ["--lead", "is not an email address"]),
    ("email-comma-list", ["form_submitted", "--lead", "b@x.example,victim@evil.example"], ["--lead", "is not an email address"]),
    ("email-script", ["form_submitted", "--lead", "<script>alert(1)</script>@x.example"], ["--lead", "is not an email address"]),
    ("email-nul", ["form_submitted", "--lead", "n\x00ul@x.example"], ["--lead", "is not an email address"]),
    ("email-empty", ["form_submitted", "--lead", ""], ["--lead", "is not an email address"]),
    ("type-100-chars", ["a" * 100, *LEAD], ["TYPE", "at most 64"]),
    ("type-dashes-and-case", ["Form-Submitted", "--lead", "new@globex.example"], ["TYPE", "did you mean form_submitted?"]),
    ("type-spaces", ["page visited", *LEAD], ["TYPE", "did you mean page_visited?"]),
    ("type-nul", ["page\x00visited", *LEAD], ["TYPE", "is not an event type"]),
    ("key-300-chars", ["page_visited", *LEAD, "--key", "k" * 300], ["--key", "at most 200"]),
    ("key-newline", ["page_visited", *LEAD, "--key", "a\nb"], ["--key", "control character U+000A"]),
    ("at-year-9999-in-utc", ["page_visited", *LEAD, "--at", "9999-12-31T23:00:00-05:00"], ["--at", "out of range"]),
    ("at-before-year-1-in-utc", ["page_visited", *LEAD, "--at", "0001-01-01T00:00:00+05:00"], ["--at", "out of range"]),
    ("at-1999", ["page_visited", *LEAD, "--at", "1999-12-31"], ["--at", "2000-01-01"]),
    ("at-next-week", ["page_visited", *LEAD, "--at", "2026-01-12T09:00:00Z"], ["--at", "in the future"]),
    ("at-banana", ["page_visited", *LEAD, "--at", "banana"], ["--at", "is not an ISO date/time"]),
    ("now-1990", ["page_visited", *LEAD, "--now", "1990-01-01"], ["--now", "out of range"]),
    ("country-unknown", [*FORM, "--prop", "country=Frankreich"], ["--prop country", "two-letter ISO code"]),
    ("country-unassigned-code", [*FORM, "--prop", "country=ZZ"], ["--prop country", "two-letter ISO code"]),
    ("timezone-mars", [*FORM, "--prop", "timezone=Mars/Olympus"], ["--prop timezone", "IANA name"]),
    ("revenue-2e15-over-the-cap", [*FORM, "--prop", "company_revenue=2000000000000000"], ["--prop company_revenue", "largest revenue"]),
    ("revenue-1e12-as-text", [*FORM, "--prop", "company_revenue=1e12"], ["--prop company_revenue", "is not an amount"]),
    ("revenue-negative", [*FORM, "--prop", "company_revenue=-5"], ["--prop company_revenue", "is not an amount"]),
    ("first-name-nul", [*FORM, "--prop", "first_name=Lé\x00a"], ["--prop first_name", "control character U+0000"]),
    ("company-escape", [*FORM, "--prop", "company=\x1b[31mACME"], ["--prop company", "control character U+001B"]),
    ("country-rich-markup", [*FORM, "--prop", "country=[red]FR"], ["--prop country", "'[red]FR' is not a country"]),
    ("job-title-400-chars", [*FORM, "--prop", "job_title=" + "x" * 400], ["--prop job_title", "at most 200"]),
    ("language-word", [*FORM, "--prop", "language=français"], ["--prop language", "a code like fr"]),
    ("prop-without-equals", ["page_visited", *LEAD, "--prop", "tarifs"], ["--prop", "expected K=V"]),
    ("prop-without-name", ["page_visited", *LEAD, "--prop", "=x"], ["--prop", "needs a name"]),
    ("prop-value-nul", ["page_visited", *LEAD, "--prop", "path=/a\x00"], ["--prop path", "control character U+0000"]),
    ("said-later-until-banana", ["said_later", *LEAD, "--prop", "until=banana"], ["--prop until", "must be an ISO date"]),
    ("said-later-until-year-9999-in-utc", ["said_later", *LEAD, "--prop", "until=9999-12-31T23:00:00-05:00"],
     ["--prop until", "out of range"]),
    ("unknown-lead", ["page_visited", "--lead", "ghost@nowhere.example"], ["no lead with email 'ghost@nowhere.example'"]),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory):
    """A project with one lead, one per backend for the whole corpus (no case may store anything)."""
    folder = tmp_path_factory.mktemp("cli-corpus")
    with ExitStack() as stack:
        db_url = module_database(request, stack, folder, "relance_corpus")
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in {"RELANCE_DATABASE_URL": db_url, "RELANCE_SCENARIOS_DIR": str(ROOT / "scenarios"),
                            "RELANCE_TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
                            "RELANCE_OUTBOX_DIR": str(folder / "outbox")}.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        stack.callback(get_settings.cache_clear)
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        migrate(engine)
        clock = FrozenClock()
        committed(engine, sync_scenarios, now=clock.now(), workspace=load_workspace(get_settings()))
        with Session(engine) as session:
            upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa")
            session.commit()
        yield engine


def _counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {name: session.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in SQLModel.metadata.tables.items()}


@pytest.mark.parametrize(("args", "words"), [pytest.param(a, w, id=i) for i, a, w in CASES])
def test_a_bad_event_is_one_sentence_naming_the_option_and_stores_nothing(store, args: list[str], words: list[str]):
    before = _counts(store)
    result = CliRunner().invoke(app, ["event", *args, "--now", NOW] if "--now" not in args else ["event", *args])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code in (1, 2), said
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in said
    for word in words:
        assert word in said, (word, said)
    assert _counts(store) == before


def test_a_good_event_is_stored_so_the_counting_above_can_see_one(store):
    before = _counts(store)
    result = CliRunner().invoke(app, ["event", "page_visited", *LEAD, "--prop", "path=/tarifs", "--now", NOW])
    assert result.exit_code == 0, result.output
    assert _counts(store)["event"] == before["event"] + 1


def test_the_corpus_is_large_enough_and_its_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 20 and len(set(ids)) == len(ids)
