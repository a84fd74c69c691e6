"""The HTTP API fuzzed from its own OpenAPI document, on both backends: whatever a client sends, with or without the
bearer token, relance never answers 5xx and every answer is one the document declares (status, content type, body).

Each operation gets RELANCE_FUZZ_EXAMPLES examples (50 in `make test`); the long run raises it:
`RELANCE_FUZZ_EXAMPLES=2000 make test PYTEST_ARGS=tests/api/test_fuzz.py`. Under CI (`CI` set) the examples are
derandomized, so a run there is reproducible; elsewhere each run draws new ones.
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack
from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine
from sqlmodel import Session, select

from relance import inputs
from relance.api.app import _Input, create_app
from relance.clock import FrozenClock
from relance.email import tracking
from relance.plans import sync_scenarios
from relance.sales import open_handoff, open_handoff_of
from relance.scenario.model import EVENT_TYPES
from relance.settings import Settings
from relance.store.db import make_engine, migrate
from relance.store.repo import upsert_lead
from relance.store.tables import Lead, Outbox
from relance.workspace import load_workspace
from tests.conftest import module_database
from tests.units import committed

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("RELANCE_FUZZ_EXAMPLES", "50"))
TOKEN = "fuzz-token-" + "7f3a9c" * 6
SECRET = "fuzz-secret-" + "b41e0d" * 6
SALES_LEAD = "lea@acme.example"  # has an open hand-off (given again whenever an answer closed it)
MAILED_LEAD = "tom@globex.example"  # got an email: its tracking and unsubscribe links are genuine
PRIVACY_LEAD = "ada@umbrella.example"  # what /leads/{email} (export, forget) is aimed at (given again once forgotten)
EVENT_LEADS = ("eve@initech.example", "new@globex.example", MAILED_LEAD)  # what aimed events are about
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
FUZZING = hypothesis.settings(deadline=None, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def _document() -> dict:
    """The OpenAPI document of an app over nothing (enough to list the operations when tests are collected)."""
    settings = Settings(scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails", secret_key=SECRET)
    return create_app(settings, engine=create_engine("sqlite://"), workspace=load_workspace(settings)).openapi()


OPERATIONS = [f"{method.upper()} {path}" for path, item in _document()["paths"].items() for method in item]


class World:
    """The app over a database of each backend: a lead with an open hand-off, a lead who got an email."""

    def __init__(self, engine, settings: Settings, clock: FrozenClock) -> None:
        self.engine, self.clock = engine, clock
        self.workspace = load_workspace(settings)
        committed(engine, sync_scenarios, now=clock.now(), workspace=self.workspace)
        with Session(engine) as session:
            upsert_lead(session, email=SALES_LEAD, now=clock.now(), first_name="Léa")
            upsert_lead(session, email=EVENT_LEADS[0], now=clock.now(), first_name="Eve")
            mailed = upsert_lead(session, email=MAILED_LEAD, now=clock.now(), first_name="Tom")
            session.flush()
            row = Outbox(lead_id=mailed.id, template="whitepaper", to_address=MAILED_LEAD, status="sent",
                         created_at=clock.now(), sent_at=clock.now())
            session.add(row)
            session.commit()
            ids = {"outbox_id": row.id, "lead_id": mailed.id, "email": MAILED_LEAD}
        self.tokens = {
            "/c/{token}": tracking.sign(SECRET, kind=tracking.CLICK, link="https://relance.example/guide", **ids),
            "/o/{token}.gif": tracking.sign(SECRET, kind=tracking.OPEN, **ids),
            "/u/{token}": tracking.sign(SECRET, kind=tracking.UNSUBSCRIBE, **ids),
        }
        self.reopen()
        self.app = create_app(settings, engine=engine, workspace=self.workspace, clock=clock)
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", self.app)

    def reopen(self) -> None:
        """Give the sales lead an open hand-off again, so answers reach past 409, and bring a forgotten lead back."""
        with Session(self.engine) as session:
            if session.exec(select(Lead).where(Lead.email == PRIVACY_LEAD)).first() is None:
                upsert_lead(session, email=PRIVACY_LEAD, now=self.clock.now(), first_name="Ada")
                session.commit()
            lead = session.exec(select(Lead).where(Lead.email == SALES_LEAD)).one()
            if open_handoff_of(session, lead.id) is None:
                open_handoff(session, lead, scoring=self.workspace.scoring, now=self.clock.now(), source="fuzz")
                session.commit()

    def cases(self, label: str) -> st.SearchStrategy:
        """The operation's requests as the document allows them and as it does not, each also aimed where generated
        values seldom reach (the lead with a hand-off, a genuine token), one with a NUL in a text, and events of known
        types about known leads."""
        method, path = label.split(" ", 1)
        operation = self.schema[path][method]
        aimed = {"email": PRIVACY_LEAD} if path.startswith("/leads/") else {"email": SALES_LEAD} if "{email}" in path else {"token": self.tokens[path]} if path in self.tokens else None
        fixed = [None, aimed] if aimed else [None]
        drawn = [operation.as_strategy(generation_mode=mode, path_parameters=given_)
                 for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) for given_ in fixed]
        drawn.append(st.builds(_poisoned, operation.as_strategy(path_parameters=aimed), st.integers(min_value=0), st.booleans()))
        if path == "/events":
            drawn.append(st.builds(_aimed, operation.as_strategy(), st.sampled_from(sorted(EVENT_TYPES)),
                                   st.sampled_from(EVENT_LEADS)))
        return st.one_of(drawn)


def _aimed(case, type_: str, email: str):
    """An events case about a known lead, of a known type, happening now, whatever else it holds."""
    for event in case.body if isinstance(case.body, list) else [case.body]:
        if isinstance(event, dict):
            event.update(type=type_, email=email)
            event.pop("occurred_at", None)
    return case


def _poisoned(case, pick: int, in_name: bool):
    """The case with a NUL in one text of its body, a value or a name (PostgreSQL refuses to store a NUL)."""
    texts = list(_texts(case.body))
    if texts:
        holder, key = texts[pick % len(texts)]
        if in_name and isinstance(holder, dict):
            holder["\x00" + key] = holder.pop(key)
        else:
            holder[key] = "\x00" + holder[key]
    return case


def _texts(value):
    """(holder, key) of every text in a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in list(items):
        if isinstance(item, str):
            yield value, key
        else:
            yield from _texts(item)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory) -> World:
    """One world per backend for every operation: what one example stores, the next ones meet."""
    folder = tmp_path_factory.mktemp("api-fuzz")
    with ExitStack() as stack:
        db_url = module_database(request, stack, folder, "relance_fuzz")
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        migrate(engine)
        settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios",
                            templates_dir=ROOT / "templates" / "emails", outbox_dir=folder / "outbox", secret_key=SECRET,
                            public_url="https://t.relance.example", api_token=TOKEN)
        yield World(engine, settings, FrozenClock())


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_request_gets_a_5xx_or_an_answer_the_document_does_not_declare(world, label):
    @hypothesis.settings(FUZZING, max_examples=EXAMPLES, derandomize=bool(os.environ.get("CI")))
    @given(case=world.cases(label), authorised=st.booleans())
    def fuzz(case, authorised):
        if authorised and any(parameter.name.lower() == "authorization" for parameter in case.operation.headers):
            case.headers = {**(case.headers or {}), "authorization": f"Bearer {TOKEN}"}
        world.reopen()
        case.call_and_validate(checks=CHECKS)

    fuzz()


def test_every_route_is_fuzzed():
    assert len(OPERATIONS) >= 11 and {"POST /events", "GET /c/{token}", "POST /u/{token}"} <= set(OPERATIONS)


@pytest.mark.parametrize("label", [label for label in OPERATIONS if label.split(" ", 1)[1].startswith(("/events", "/sales", "/leads"))])
def test_without_a_token_the_secured_routes_answer_503_as_documented(world, label):
    settings = Settings(database_url=world.engine.url.render_as_string(hide_password=False), scenarios_dir=ROOT / "scenarios",
                        templates_dir=ROOT / "templates" / "emails", secret_key=SECRET, api_token=None)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, engine=world.engine, workspace=world.workspace,
                                                                         clock=world.clock))
    method, path = label.split(" ", 1)

    @hypothesis.settings(FUZZING, max_examples=5, derandomize=True)
    @given(case=schema[path][method].as_strategy())
    def fuzz(case):
        case.headers = {**(case.headers or {}), "authorization": f"Bearer {TOKEN}"}
        response = case.call_and_validate(checks=[check for check in CHECKS if check is not not_a_server_error])
        assert response.status_code in (400, 422, 503)  # a body FastAPI cannot read is refused before the token is looked at

    fuzz()


REQUIRED = {  # the least body each request model takes: a NUL is then put in each of its texts in turn
    "Consent": {"source": "form", "wording": "J'accepte"}, "LegitimateInterest": {"source": "salon"}, "SalesAnswerIn": {}, "ReassignIn": {"to": "karim@example.com"},
    "DealWonIn": {}, "DealLostIn": {"reason": "price"}, "EventIn": {"type": "form_submitted", "email": "lea@acme.example"},
}


def _nul_bodies(model) -> list[tuple[str, dict]]:
    """(field, body) with a NUL in one text of the body: each str field, each name and value of a dict of texts."""
    bodies = []
    for name, field in model.model_fields.items():
        kinds = _kinds(field.annotation)
        if name == "properties":  # checked by ingestion, naming the property (tests/corpus/test_api_corpus.py)
            continue
        if str in kinds:
            bodies.append((name, {**REQUIRED[model.__name__], name: "a\x00b"}))
        if dict in kinds:
            bodies.append((name, {**REQUIRED[model.__name__], name: {"bud\x00get": "40k"}}))
            bodies.append((name, {**REQUIRED[model.__name__], name: {"budget": "40k\x00"}}))
    return bodies


def _kinds(annotation) -> set:
    """What a field may be (`str | None` -> str, NoneType; `dict[str, str] | None` -> dict, NoneType)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return {kind for arg in get_args(annotation) for kind in _kinds(arg)}
    return {origin or annotation}


def test_every_text_of_every_request_body_refuses_a_nul():
    models = {model.__name__: model for model in _Input.__subclasses__()}
    assert set(models) == set(REQUIRED)  # a new request model: give it its least body above
    for model in models.values():
        for name, body in _nul_bodies(model):
            with pytest.raises(ValidationError) as refused:
                model.model_validate(body)
            error = refused.value.errors()[0]
            assert error["loc"][0] == name, (model.__name__, name, error)
            assert "U+0000" in error["msg"] or "not an e" in error["msg"], (model.__name__, name, error)  # email, event type


@hypothesis.settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(exclude_categories=["Cs"])))
def test_the_documented_patterns_refuse_what_the_checks_refuse(text):
    for pattern, multiline in ((inputs.TEXT_PATTERN, True), (inputs.LINE_PATTERN, False)):
        try:
            inputs.checked_text(text, max_length=len(text), multiline=multiline)
            accepted = True
        except ValueError:
            accepted = False
        assert (re.fullmatch(pattern, text) is not None) == accepted, (pattern, text)
