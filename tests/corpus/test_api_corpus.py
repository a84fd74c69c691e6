"""Bad input through the HTTP API, on both backends: each case gets a 4xx naming the field, never a 500, and
nothing is stored (every table counted before and after)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session

from relance.api.app import create_app
from relance.clock import FrozenClock
from relance.email.tracking import sign
from relance.plans import sync_scenarios
from relance.sales import open_handoff
from relance.settings import Settings
from relance.store.db import make_engine, migrate
from relance.store.repo import upsert_lead
from relance.store.tables import Deal, Enrollment, Event, Handoff, Lead, Outbox, ScoreChange, StageChange, Suppression
from relance.workspace import load_workspace
from tests.conftest import module_database
from tests.units import committed

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "corpus-token-of-the-tests"
SECRET = "corpus-secret-" + "k" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TABLES = (Lead, Event, Suppression, StageChange, ScoreChange, Handoff, Deal, Enrollment, Outbox)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    content: bytes | Callable[[], Any] | None = None  # raw body (a callable: a fresh chunk iterator per run)
    headers: dict[str, Any] = field(default_factory=lambda: dict(AUTH))


def event(**fields: Any) -> Call:
    """POST /events with one event: a new lead's form, changed by `fields`."""
    return Call("POST", "/events", json={"type": "form_submitted", "email": "new@globex.example", **fields})


def form(**properties: Any) -> Call:
    return event(properties=properties)


def raw(body: bytes, path: str = "/events") -> Call:
    return Call("POST", path, content=body, headers={**AUTH, "content-type": "application/json"})


def sales(path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Call:
    return Call(method, path, json=body if method == "POST" else None)


CLICK = sign(SECRET, kind="c", outbox_id=1, lead_id=1, email="lea@acme.example", link="https://evil.example")
LONG = "x" * 400

CASES = [
    # emails: what the issue found stored, and their cousins
    ("email-not-an-email", event(email="not-an-email"), 422, ["email", "is not an email address"]),
    ("email-crlf-bcc", event(email="a@x.example\r\nbcc: victim@evil.example"), 422, ["email", "is not an email address"]),
    ("email-comma-list", event(email="b@x.example,victim@evil.example"), 422, ["email", "is not an email address"]),
    ("email-script", event(email="<script>alert(1)</script>@x.example"), 422, ["email", "is not an email address"]),
    ("email-nul", event(email="n\x00ul@x.example"), 422, ["email", "is not an email address"]),
    ("email-empty", event(email=""), 422, ["email", "is not an email address"]),
    ("email-too-long", event(email="a" * 330 + "@x.example"), 422, ["email", "at most 320"]),
    ("email-no-tld", event(email="lea@localhost"), 422, ["email", "is not an email address"]),
    ("email-number", event(email=42), 422, ["email", "valid string"]),
    ("email-lone-surrogate", raw(b'{"type": "form_submitted", "email": "\\ud800@x.example"}'), 422, ["email", "unicode"]),
    # event types
    ("type-100-chars", event(type="a" * 100), 422, ["type", "at most 64"]),
    ("type-capitalised", event(type="Form_Submitted"), 422, ["type", "did you mean form_submitted"]),
    ("type-dashes", event(type="form-submitted"), 422, ["type", "did you mean form_submitted"]),
    ("type-spaces", event(type="page visited", email="lea@acme.example"), 422, ["type", "did you mean page_visited"]),
    ("type-no-underscore", event(type="emailopened", email="lea@acme.example"), 422, ["type", "did you mean email_opened"]),
    ("type-nul", event(type="page\x00visited"), 422, ["type", "is not an event type"]),
    ("type-empty", event(type=""), 422, ["type", "is not an event type"]),
    ("type-script", event(type="<script>"), 422, ["type", "lower-case letters, digits and underscores"]),
    ("type-leading-digit", event(type="1st_visit"), 422, ["type", "is not an event type"]),
    ("type-number", event(type=7), 422, ["type", "valid string"]),
    # idempotency keys
    ("key-300-chars", event(idempotency_key="k" * 300), 422, ["idempotency_key", "at most 200"]),
    ("key-empty", event(idempotency_key=""), 422, ["idempotency_key", "at least 1"]),
    ("key-crlf", event(idempotency_key="a\r\nb"), 422, ["idempotency_key", "control character"]),
    ("key-nul", event(idempotency_key="a\x00b"), 422, ["idempotency_key", "control character u+0000"]),
    # when it happened
    ("occurred-year-9999-in-utc", event(occurred_at="9999-12-31T23:59:59-05:00"), 422, ["occurred_at", "out of range"]),
    ("occurred-before-year-1-in-utc", event(occurred_at="0001-01-01T00:00:00+05:00"), 422, ["occurred_at", "out of range"]),
    ("occurred-1999", event(occurred_at="1999-12-31T23:00:00Z"), 422, ["occurred_at", "2000-01-01"]),
    ("occurred-next-week", event(occurred_at="2026-01-12T09:00:00Z"), 422, ["occurred_at", "in the future"]),
    ("occurred-banana", event(occurred_at="banana"), 422, ["occurred_at", "datetime"]),
    # the lead fields a form carries
    ("country-name-unknown", form(country="Frankreich"), 422, ["country", "two-letter iso code"]),
    ("country-unassigned-code", form(country="ZZ"), 422, ["country", "two-letter iso code"]),
    ("country-three-letters", form(country="FRA"), 422, ["country", "two-letter iso code"]),
    ("timezone-mars", form(timezone="Mars/Olympus"), 422, ["timezone", "iana name"]),
    ("timezone-path", form(timezone="../../etc/passwd"), 422, ["timezone", "iana name"]),
    ("timezone-nul", form(timezone="Europe/Paris\x00"), 422, ["timezone", "control character u+0000"]),
    ("revenue-1e16", form(company_revenue=1e16), 422, ["company_revenue", "largest revenue"]),
    ("revenue-2e15-over-the-cap", form(company_revenue=2_000_000_000_000_000), 422, ["company_revenue", "largest revenue"]),
    ("revenue-negative", form(company_revenue=-5), 422, ["company_revenue", "cannot be negative"]),
    ("revenue-words", form(company_revenue="beaucoup"), 422, ["company_revenue", "not an amount"]),
    ("revenue-true", form(company_revenue=True), 422, ["company_revenue", "not an amount"]),
    ("revenue-nan", raw(b'{"type": "form_submitted", "email": "new@globex.example", "properties": {"company_revenue": NaN}}'),
     422, ["company_revenue", "not a number relance can keep"]),
    ("language-word", form(language="français"), 422, ["language", "code like fr"]),
    ("first-name-nul", form(first_name="Lé\x00a"), 422, ["first_name", "control character u+0000"]),
    ("company-escape", form(company="\x1b[31mACME"), 422, ["company", "control character u+001b"]),
    ("job-title-400-chars", form(job_title=LONG), 422, ["job_title", "at most 200"]),
    ("first-name-lone-surrogate", raw(b'{"type": "form_submitted", "email": "new@globex.example", "properties": {"first_name": "\\ud800"}}'),
     422, ["first_name", "u+d800"]),
    # any property
    ("property-value-nul", event(type="page_visited", email="lea@acme.example", properties={"path": "/a\x00"}), 422,
     ["path", "control character"]),
    ("property-name-empty", event(type="page_visited", email="lea@acme.example", properties={"": "x"}), 422,
     ["properties", "needs a name"]),
    ("property-name-too-long", event(type="page_visited", email="lea@acme.example", properties={"p" * 70: "x"}), 422,
     ["properties", "at most 64"]),
    ("property-name-surrogate", raw(b'{"type": "page_visited", "email": "lea@acme.example", "properties": {"\\ud800": 1}}'), 422,
     ["properties", "u+d800"]),
    ("property-nested", event(type="page_visited", email="lea@acme.example", properties={"a": {"b": 1}}), 422,
     ["properties", "valid string"]),
    ("property-infinity", raw(b'{"type": "page_visited", "email": "lea@acme.example", "properties": {"x": Infinity}}'), 422,
     ["properties", "not a number relance can keep"]),
    ("property-5000-chars", event(type="page_visited", email="lea@acme.example", properties={"note": "x" * 5000}), 422,
     ["note", "at most 4000"]),
    ("properties-51", event(type="page_visited", email="lea@acme.example", properties={f"p{i}": i for i in range(51)}), 422,
     ["properties", "at most 50"]),
    ("unknown-field", event(colour="red"), 422, ["colour", "extra"]),
    ("said-later-until-banana", event(type="said_later", email="lea@acme.example", properties={"until": "banana"}), 422,
     ["until", "iso date"]),
    ("said-later-until-year-9999-in-utc",
     event(type="said_later", email="lea@acme.example", properties={"until": "9999-12-31T23:00:00-05:00"}), 422,
     ["until", "out of range"]),
    ("consent-at-property-banana", form(consent_at="banana"), 422, ["consent_at"]),
    ("consent-wording-nul", event(consent={"source": "form", "wording": "J'accepte\x00"}), 422, ["wording", "control character"]),
    ("consent-at-year-9999", event(consent={"source": "form", "wording": "ok", "at": "9999-12-31T23:00:00-05:00"}), 422,
     ["consent", "out of range"]),
    ("consent-source-empty", event(consent={"source": "", "wording": "ok"}), 422, ["source", "at least 1"]),
    # bodies and batches
    ("batch-empty", Call("POST", "/events", json=[]), 422, ["batch", "at least 1"]),
    ("batch-second-event-bad", Call("POST", "/events", json=[{"type": "form_submitted", "email": "ok@globex.example"},
                                                             {"type": "form_submitted", "email": "not-an-email"}]),
     422, ['"batch", 1, "email"', "is not an email address"]),
    ("batch-1001", Call("POST", "/events", json=[{"type": "form_submitted", "email": "ok@globex.example"}] * 1001), 422,
     ["batch", "at most 1000"]),
    ("batch-second-in-future", Call("POST", "/events", json=[
        {"type": "form_submitted", "email": "ok@globex.example"},
        {"type": "page_visited", "email": "lea@acme.example", "occurred_at": "2027-01-01T00:00:00Z"}]), 422,
     ['1, "occurred_at"', "in the future"]),
    ("body-not-json", raw(b"{"), 422, ["json"]),
    ("body-a-string", raw(b'"hello"'), 422, ["event", "valid dictionary"]),
    ("body-null", raw(b"null"), 422, ["body"]),
    ("body-deeply-nested", raw(b"[" * 100_000), 400, ["parsing the body"]),
    ("unknown-lead", event(type="page_visited", email="ghost@nowhere.example"), 422, ["email", "no lead with email"]),
    ("body-over-1mb-declared", Call("POST", "/events", content=b"x" * 1_100_000, headers={**AUTH, "content-type": "application/json"}),
     413, ["larger than 1000000 bytes"]),
    ("body-over-1mb-chunked", Call("POST", "/events", content=lambda: iter([b"x" * 65536] * 20),
                                   headers={**AUTH, "content-type": "application/json"}), 413, ["larger than 1000000 bytes"]),
    # the bearer token
    ("auth-non-ascii", Call("POST", "/events", json={"type": "page_visited", "email": "lea@acme.example"},
                            headers={"Authorization": f"Bearer {TOKEN}é".encode()}), 401, ["bearer token"]),
    ("auth-missing", Call("POST", "/events", json={"type": "page_visited", "email": "lea@acme.example"}, headers={}), 401,
     ["bearer token"]),
    ("auth-basic", Call("POST", "/events", json={"type": "page_visited", "email": "lea@acme.example"},
                        headers={"Authorization": f"Basic {TOKEN}"}), 401, ["bearer token"]),
    ("auth-latin1-bytes", Call("POST", "/events", json={"type": "page_visited", "email": "lea@acme.example"},
                               headers={"Authorization": b"Bearer \xff\xfe"}), 401, ["bearer token"]),
    # tracking and unsubscribe tokens
    ("click-non-ascii", Call("GET", "/c/é.é"), 404, ["not found"]),
    ("click-altered-non-ascii", Call("GET", f"/c/{CLICK}é"), 404, ["not found"]),
    ("click-emoji", Call("GET", "/c/%F0%9F%98%80.%F0%9F%98%80"), 404, ["not found"]),
    ("click-garbage", Call("GET", "/c/garbage"), 404, ["not found"]),
    ("click-10k", Call("GET", "/c/" + "a" * 10_000 + ".b"), 404, ["not found"]),
    ("click-nul", Call("GET", "/c/a%00b.c"), 404, ["not found"]),
    ("open-non-ascii", Call("GET", "/o/é.é.gif"), 404, ["not found"]),
    ("unsubscribe-page-non-ascii", Call("GET", "/u/é.é"), 404, ["not found"]),
    ("unsubscribe-post-non-ascii", Call("POST", "/u/%C3%A9.%C3%A9", content=b"List-Unsubscribe=One-Click"), 404, ["not found"]),
    ("unsubscribe-latin1", Call("GET", "/u/%FF.%FE"), 404, ["not found"]),
    # sales
    ("sales-email-not-an-email", sales("/sales/not-an-email/accept", {"by": "claire@example.com"}), 422, ["email", "not an email"]),
    ("sales-email-nul", sales("/sales/lea%00@acme.example/accept", {"by": "claire@example.com"}), 422, ["email", "not an email"]),
    ("sales-email-non-ascii", sales("/sales/l%C3%A9a@acme.example/accept", {"by": "claire@example.com"}), 422,
     ["email", "not an email"]),
    ("sales-later-until-banana", sales("/sales/lea@acme.example/later", {"until": "banana"}), 422, ["until", "datetime"]),
    ("sales-later-until-year-9999-in-utc", sales("/sales/lea@acme.example/later", {"until": "9999-12-31T23:00:00-05:00"}), 422,
     ["until", "out of range"]),
    ("sales-reject-note-nul", sales("/sales/lea@acme.example/reject", {"reason": "no-budget", "note": "a\x00b"}), 422,
     ["note", "control character"]),
    ("sales-accept-bant-nul", sales("/sales/lea@acme.example/accept", {"bant": {"budget": "40k\x00"}}), 422,
     ["bant", "control character"]),
    ("sales-by-escape", sales("/sales/lea@acme.example/accept", {"by": "\x1b[2Jclaire"}), 422, ["by", "control character"]),
    ("sales-reassign-to-not-an-email", sales("/sales/lea@acme.example/reassign", {"to": "karim"}), 422, ["to", "not an email"]),
    ("sales-reassign-to-crlf", sales("/sales/lea@acme.example/reassign", {"to": "karim@x.example\r\nbcc: y@evil.example"}), 422,
     ["to", "not an email"]),
    ("sales-won-amount-infinity", raw(b'{"amount": Infinity}', "/sales/lea@acme.example/won"), 422, ["amount", "finite number"]),
    ("sales-won-margin-nan", raw(b'{"amount": 10, "margin": NaN}', "/sales/lea@acme.example/won"), 422, ["margin", "finite number"]),
    ("sales-won-on-year-9999-in-utc", sales("/sales/lea@acme.example/won", {"on": "9999-12-31T23:00:00-05:00"}), 422,
     ["on", "out of range"]),
    ("sales-lost-by-nul", sales("/sales/lea@acme.example/lost", {"reason": "price", "by": "a\x00"}), 422, ["by", "control character"]),
    # a NUL in any text of a sales answer or a deal: PostgreSQL refuses it, so it must never reach the database
    ("sales-reject-reason-nul", sales("/sales/lea@acme.example/reject", {"reason": "no-budget\x00"}), 422,
     ["reason", "control character u+0000"]),
    ("sales-later-reason-nul", sales("/sales/lea@acme.example/later", {"reason": "\x00"}), 422,
     ["reason", "control character u+0000"]),
    ("sales-later-note-nul", sales("/sales/lea@acme.example/later", {"note": "rappeler\x00"}), 422,
     ["note", "control character u+0000"]),
    ("sales-accept-by-nul", sales("/sales/lea@acme.example/accept", {"by": "claire\x00"}), 422, ["by", "control character u+0000"]),
    ("sales-accept-bant-name-nul", sales("/sales/lea@acme.example/accept", {"bant": {"bud\x00get": "40k"}}), 422,
     ["bant", "control character u+0000"]),
    ("sales-reassign-by-nul", sales("/sales/lea@acme.example/reassign", {"to": "karim@example.com", "by": "\x00"}), 422,
     ["by", "control character u+0000"]),
    ("sales-won-by-nul", sales("/sales/lea@acme.example/won", {"by": "jeanne\x00"}), 422, ["by", "control character u+0000"]),
    ("sales-won-note-nul", sales("/sales/lea@acme.example/won", {"note": "licence\x00"}), 422, ["note", "control character u+0000"]),
    ("sales-lost-reason-nul", sales("/sales/lea@acme.example/lost", {"reason": "price\x00"}), 422,
     ["reason", "control character u+0000"]),
    ("sales-lost-note-nul", sales("/sales/lea@acme.example/lost", {"reason": "price", "note": "\x00"}), 422,
     ["note", "control character u+0000"]),
    ("consent-source-nul", event(consent={"source": "form\x00", "wording": "ok"}), 422, ["source", "control character u+0000"]),
    # amounts whose sums would be infinite (relance report --json could not write them)
    ("sales-won-amount-1e308", sales("/sales/lea@acme.example/won", {"amount": 1e308, "margin": 1e308}), 422,
     ["amount", "at most 1,000,000,000,000"]),
    ("sales-won-margin-over-max", sales("/sales/lea@acme.example/won", {"amount": 5, "margin": 2e12}), 422,
     ["margin", "at most 1,000,000,000,000"]),
    ("sales-verdict-unknown", sales("/sales/lea@acme.example/maybe", {}), 422, ["verdict"]),
    ("sales-handoffs-owner-nul", sales("/sales/handoffs?owner=a%00b", method="GET"), 422, ["owner", "control character"]),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, tmp_path_factory):
    """The API over a lead with an open hand-off, one per backend for the whole corpus: no case may store anything,
    and each counts every table before and after."""
    folder = tmp_path_factory.mktemp("api-corpus")
    with ExitStack() as stack:
        db_url = module_database(request, stack, folder, "relance_corpus")
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        migrate(engine)
        clock = FrozenClock()
        settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                            outbox_dir=folder / "outbox", secret_key=SECRET, public_url="https://t.relance.example",
                            api_token=TOKEN)
        workspace = load_workspace(settings)
        committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
        with Session(engine) as session:
            lead = upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa")
            session.flush()
            open_handoff(session, lead, scoring=workspace.scoring, now=clock.now(), source="corpus")
            session.commit()
        yield TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock), raise_server_exceptions=False), engine


def _counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {table.__name__: session.execute(select(func.count()).select_from(table)).scalar_one() for table in TABLES}


@pytest.mark.parametrize(("call", "status", "words"), [pytest.param(c, s, w, id=i) for i, c, s, w in CASES])
def test_bad_input_gets_a_4xx_naming_the_field_and_stores_nothing(api, call: Call, status: int, words: list[str]):
    client, engine = api
    before = _counts(engine)
    content = call.content() if callable(call.content) else call.content
    response = client.request(call.method, call.path, json=call.json, content=content, headers=call.headers,
                              follow_redirects=False)
    answer = json.dumps(response.json(), ensure_ascii=False).lower()
    assert response.status_code == status, answer
    assert "traceback" not in answer and "internal server error" not in answer
    for word in words:
        assert word.lower() in answer, (word, answer)
    assert _counts(engine) == before


def test_the_corpus_is_large_enough_and_its_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
