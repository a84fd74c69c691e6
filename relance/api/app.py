"""The HTTP API (`relance serve`): click and open tracking, one-click unsubscribe, event intake.

Tracking and unsubscribe URLs carry signed tokens (relance.email.tracking); a forged or altered
token gets 404 and records nothing. `POST /events` takes one event or a batch, behind the
bearer token RELANCE_API_TOKEN.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Callable, Iterator, Literal, Union
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.utils import is_body_allowed_for_status_code
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic_core import PydanticCustomError
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relance import inputs
from relance.api import pages
from relance.clock import Clock, SystemClock, ensure_utc
from relance.deals import LOST_REASONS, MONEY_MAX, Closing, record_deal
from relance.email import tracking
from relance.engagement import machine_request
from relance.ingest import BadEvent, IncomingEvent, UnknownLead, ingest_events
from relance.privacy import export, forget
from relance.workspace import Workspace
from relance.sales import (BANT_FIELDS, REJECT_REASONS, Answer, BadAnswer, HandoffClosed, NoSuchLead, answer, open_handoffs,
                           reassign)
from relance.scenario.model import MACHINE_CLICK
from relance.settings import Settings
from relance.store.tables import Lead, Outbox
from relance.suppression import ALL, EXCEPT_NEWSLETTER, PAUSE, preferences_of, set_preference

MAX_BODY_BYTES = 1_000_000
MAX_BATCH = 1000
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _shared(check) -> AfterValidator:
    """A validator running one of relance.inputs' checks: its sentence is the error's message."""

    def validate(value: Any) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise PydanticCustomError("bad_input", "{reason}", {"reason": str(exc)}) from None

    return AfterValidator(validate)


def _printable(value: str) -> str:
    """Text a database can store: no control character (NUL, escape; tabs and line breaks are fine), no lone surrogate."""
    return inputs.checked_text(value, max_length=len(value))  # the length is the field's own (Field(max_length=...))


Email = Annotated[str, Field(max_length=inputs.EMAIL_MAX, json_schema_extra={"format": "email"}), _shared(inputs.checked_email)]
Instant = Annotated[datetime, _shared(inputs.checked_instant)]  # 2000-01-01 to 2100-01-01, as UTC
# every text of a request body: PostgreSQL refuses a NUL, and no reader of a note or a name wants an escape sequence
Text = Annotated[str, Field(json_schema_extra={"pattern": inputs.TEXT_PATTERN}), _shared(_printable)]
MONEY = {"minimum": 0, "maximum": MONEY_MAX}  # documented only: relance.deals refuses what is out, naming the field
Stamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]  # an instant as relance writes it (ISO 8601)
# an event's property: ingestion checks it and names it when it refuses it, so these limits are the document's only
PropertyText = Annotated[str, Field(json_schema_extra={"maxLength": inputs.PROPERTY_TEXT_MAX, "pattern": inputs.TEXT_PATTERN})]
Scalar = Union[PropertyText, int, float, bool, None]
PROPERTY_NAMES = {"minLength": 1, "maxLength": inputs.PROPERTY_NAME_MAX, "pattern": inputs.LINE_PATTERN}


class _Input(BaseModel):
    """A request body: unknown keys are refused; each text field is `Text` (an event's properties are checked by
    ingestion, naming the property)."""

    model_config = ConfigDict(extra="forbid")


class Consent(_Input):
    """Proof of consent given (or withdrawn) with a form: where, when, and the exact wording the person accepted.
    Kept on the lead with every earlier record (`relance lead show`); a withdrawal stops every email to the address."""

    source: Text = Field(min_length=1, max_length=200, description="Form or page where consent was given.")
    wording: Text = Field(min_length=1, max_length=2000, description="The text the person accepted.")
    at: Instant | None = Field(None, description="When (default: the event's time).")
    granted: bool = Field(True, description="false: the person withdraws consent.")


class LegitimateInterest(_Input):
    """A professional contact (B2B) mailed on legitimate interest rather than consent: where the contact came from.
    Kept as the lead's lawful basis unless it has one (a consent stays); a lead with no basis gets no marketing email."""

    source: Text = Field(min_length=1, max_length=200, description="Where the contact came from (trade show, business card, CRM).")


class SalesAnswerIn(_Input):
    """Sales' answer to a handoff."""

    by: Text = Field("sales", min_length=1, max_length=320, description="Who answers (recorded in the stage history).")
    reason: Text | None = Field(None, max_length=2000, description=f"reject: one of {', '.join(REJECT_REASONS)}; later: any.")
    note: Text = Field("", max_length=2000)
    bant: Annotated[dict[Text, Text], Field(json_schema_extra={"propertyNames": {"enum": list(BANT_FIELDS)}})] | None = Field(
        None, description=f"accept: {', '.join(BANT_FIELDS)}.")
    until: Instant | None = Field(None, description="later: the re-engage date (default: later.default_delay).")


class ReassignIn(_Input):
    """Give a lead's open hand-off to another owner."""

    to: Email = Field(description="The new owner's email (gets the hand-off email).")
    by: Text = Field("sales", min_length=1, max_length=320, description="Who reassigns (recorded with the change).")


class DealWonIn(_Input):
    """A deal sales won: the lead becomes a customer (a customer's next deal is an upsell)."""

    by: Text = Field("sales", min_length=1, max_length=320, description="Who won it (recorded in the stage history).")
    amount: float = Field(0.0, allow_inf_nan=False, description="What the deal is worth.", json_schema_extra=MONEY)
    margin: float = Field(0.0, allow_inf_nan=False, description="Its gross margin, part of the amount (at most the amount): "
                          "what ROI counts.", json_schema_extra=MONEY)
    on: Instant | None = Field(None, description="The day it was won (default: now; never in the future).")
    note: Text = Field("", max_length=2000)


class DealLostIn(_Input):
    """A deal sales lost: the lead goes back to nurturing with the reason (a customer stays a customer)."""

    by: Text = Field("sales", min_length=1, max_length=320, description="Who lost it (recorded in the stage history).")
    reason: Text = Field(description="Why it was lost.", json_schema_extra={"enum": list(LOST_REASONS)})
    on: Instant | None = Field(None, description="The day it was lost (default: now; never in the future).")
    note: Text = Field("", max_length=2000)


class EventIn(_Input):
    """One event from the website, a CRM or any system (checked as every event is: relance.inputs)."""

    type: Annotated[str, Field(max_length=inputs.EVENT_TYPE_MAX, examples=["form_submitted", "downloaded", "page_visited"],
                               json_schema_extra={"pattern": inputs.EVENT_TYPE_PATTERN}), _shared(inputs.checked_event_type)]
    email: Email
    occurred_at: Instant | None = Field(None, description="When it happened (default: now; at most a day ahead).")
    properties: dict[str, Scalar] = Field(default_factory=dict, max_length=50, json_schema_extra={"propertyNames": PROPERTY_NAMES})
    idempotency_key: Annotated[str, Field(min_length=1, max_length=inputs.KEY_MAX, json_schema_extra={"pattern": inputs.LINE_PATTERN}),
                               _shared(inputs.checked_key)] | None = None
    consent: Consent | None = Field(None, description="The consent the form collected: the lead's lawful basis becomes consent "
                                    "(a withdrawal removes it).")
    legitimate_interest: LegitimateInterest | None = Field(
        None, description="No consent, a professional contact: the lead's lawful basis is legitimate interest (the same as "
        "the properties basis=legitimate_interest and basis_source).")


def _one_or_many(body: Any) -> str:
    return "batch" if isinstance(body, list) else "event"


# one event, or a batch: an error names the event's field, or its place in the batch (body.batch.3.email)
EventsBody = Annotated[
    Union[Annotated[EventIn, Tag("event")], Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH), Tag("batch")]],
    Discriminator(_one_or_many),
]


class Problem(BaseModel):
    """An answer that is no success: what is wrong, in one sentence."""

    detail: str


class Health(BaseModel):
    """The app runs and reaches its database."""

    status: Literal["ok"]
    database: Literal["ok"]


class Down(BaseModel):
    """The app runs but its database does not answer."""

    status: Literal["down"]
    database: Literal["unreachable"]


class Stored(BaseModel):
    """What came of the events received."""

    stored: int = Field(description="Events kept.")
    duplicates: int = Field(description="Events already kept (same idempotency key): nothing done again.")
    enrolled: int = Field(description="Enrollments they started.")
    woken: int = Field(description="Waiting enrollments they woke.")


class OpenHandoff(BaseModel):
    """An open hand-off, as `relance sales list` shows it."""

    email: str
    name: str
    company: str
    score: int
    grade: str
    owner: str
    team: str | None
    source: str = Field(description="What handed the lead to sales.")
    opened_at: Stamp
    target_at: Stamp
    deadline_at: Stamp
    age_minutes: int
    target_left_minutes: int = Field(description="Negative: the target passed that long ago.")
    deadline_left_minutes: int = Field(description="Negative: overdue by that much.")
    overdue: bool


class Answered(BaseModel):
    """The hand-off once sales answered."""

    email: str
    status: Literal["accepted", "rejected", "later"]
    owner: str
    later_until: Stamp | None = Field(description="later: the day the lead is re-engaged.")


class Reassigned(BaseModel):
    """The hand-off with its new owner (the SLA deadline stays)."""

    email: str
    status: Literal["open"]
    owner: str
    team: str | None
    deadline_at: Stamp


class Forgot(BaseModel):
    """A person erased: only the address's hash stays, on the suppression list."""

    email: str
    status: Literal["forgotten", "already forgotten"]


class Held(BaseModel):
    """Everything relance holds about a person (relance.privacy.export)."""

    profile: dict[str, Any]
    consent: dict[str, Any]
    basis: dict[str, Any] | None = Field(None, description="The lawful basis the person may be mailed on (relance.consent), or none.")
    suppression: dict[str, Any]
    events: list[dict[str, Any]]
    emails: list[dict[str, Any]]
    enrollments: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    score_history: list[dict[str, Any]]
    stage_history: list[dict[str, Any]]
    handoffs: list[dict[str, Any]]
    deals: list[dict[str, Any]]


class Closed(BaseModel):
    """The deal recorded, and the lead's stage after it."""

    email: str
    outcome: Literal["won", "lost"]
    kind: Literal["new", "upsell"] = Field(description="upsell: the lead had won a deal before.")
    amount: float
    margin: float
    reason: str | None = Field(description="lost: why.")
    on: Stamp
    stage: str


_ANSWERS: dict[int, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is no JSON relance can read, or not the body the route expects."},
    401: {"model": Problem, "description": "No bearer token, or not RELANCE_API_TOKEN.",
          "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}},
    404: {"model": Problem, "description": "No lead with that email."},
    409: {"model": Problem, "description": "The lead's hand-off is closed, or it never had one."},
    413: {"model": Problem, "description": f"The body is larger than {MAX_BODY_BYTES} bytes (nothing is read past that)."},
    503: {"model": Problem, "description": "The API is off (RELANCE_API_TOKEN is not set), or its database does not answer (retry)."},
}


def answers(*codes: int, link: bool = False, page: bool = False) -> dict[int | str, dict[str, Any]]:
    """The errors a route gives besides its 422, for its OpenAPI document: a `link` route's 404 is a token's, and
    errors are JSON even on a route whose success is a `page` (where FastAPI would say they are HTML)."""
    chosen = {code: NOT_SIGNED if link and code == 404 else _ANSWERS[code] for code in codes}
    return {code: _json(answer) if page else answer for code, answer in chosen.items()}


def _json(answer: dict[str, Any]) -> dict[str, Any]:
    """An error answer with its JSON body spelt out."""
    spelt = {key: value for key, value in answer.items() if key != "model"}
    return {**spelt, "content": {"application/json": {"schema": answer["model"].model_json_schema()}}}


SECURED = (401, 503)  # every route behind the bearer token
NOT_SIGNED = {"model": Problem, "description": "A token relance did not sign, or for an email that is gone: nothing is recorded."}
REDIRECT = {302: {"description": "To the link's page.", "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}}
GIF = {200: {"description": "A transparent 1x1 GIF.", "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}}}}
UNSUBSCRIBE_FORM = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object",
    "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"],
                                        "description": "RFC 8058's one-click POST: unsubscribe from everything."},
                   "choice": {"type": "string", "enum": list(pages.CHOICES),
                              "description": "The page's form: all (everything), newsletter (only the newsletter), "
                                             "pause (3 months)."}}}}}}}
BAD_CHOICE = {"description": "Neither the one-click body nor a known `choice`: a page saying so, with the form again; "
                             "nothing changes.", "content": {"text/html": {"schema": {"type": "string"}}}}


LeadEmail = Annotated[str, Path(max_length=inputs.EMAIL_MAX, description="The lead's email.", json_schema_extra={"format": "email"}),
                      _shared(inputs.checked_email)]


def _owner(value: str | None) -> str | None:
    """An owner to list the hand-offs of: one line of text."""
    return None if value is None else inputs.checked_text(value, max_length=inputs.EMAIL_MAX, multiline=False)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, able to quote any input (half a surrogate pair, NaN) instead of failing to write it."""
    return JSONResponse({"detail": _plain(jsonable_encoder(exc.errors()))}, status_code=422)


_log = logging.getLogger("relance.api")
DATABASE_DOWN = "the database does not answer: nothing was stored; try again in a moment"


async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
    """A database out of reach (stopped, restarting, its disk gone) is the service's state, not a bug: 503, said
    once in the server log, so that clients (SES, forms, a load balancer) retry instead of reading a 500."""
    _log.error("%s %s: %s (%s)", request.method, request.url.path, DATABASE_DOWN, str(exc.orig).strip().splitlines()[0])
    if request.url.path == "/health":
        return JSONResponse({"status": "down", "database": "unreachable"}, status_code=503)
    return JSONResponse({"detail": DATABASE_DOWN}, status_code=503, headers={"Retry-After": "30"})


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer to an HTTPException, able to quote any input as `_invalid_request`."""
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse({"detail": _plain(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def _plain(value: Any) -> Any:
    """What JSON can carry of a value a request sent: text with lone surrogates escaped, NaN and infinities as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class BodyTooLarge(Exception):
    """A request body passed the limit while it was being read."""


class BodyLimit:
    """Refuse (413) a request whose body is larger than `limit` bytes, whether it says so (Content-Length) or not
    (chunked): the body is counted as it arrives and reading stops as soon as it passes the limit, so a huge body
    is never held in memory. What the app had begun to answer about the cut body is replaced by the 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, send)
            return
        seen, cut, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, cut
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    cut = True
                    raise BodyTooLarge()
            return message

        async def held(message: Message) -> None:
            nonlocal started
            if not cut:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, counted, held)
        except Exception:  # noqa: BLE001 - whatever reading a cut body raised, the answer is the 413
            if not cut:
                raise
        if cut and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def _bears(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries this bearer token (RFC 6750): the scheme in any case, then the token
    exactly, compared in constant time; a token with anything around it (a space, a second word) is not the token."""
    if authorization is None or not authorization.isascii():
        return False
    scheme, _, given = authorization.partition(" ")
    right_token = hmac.compare_digest(given.lstrip(" ").encode(), token.encode())  # computed whatever the scheme
    return scheme.lower() == "bearer" and right_token


def create_app(settings: Settings, *, engine: Engine, workspace: Workspace, clock: Clock | None = None,
               announce: Callable[..., None] | None = None) -> FastAPI:
    """The app over one database and one scenarios folder; `announce` (relance.prefect_adapter.Announcer) hears of
    the scenarios each request made due, so that their ticks run now."""
    clock = clock or SystemClock()
    announce = announce or (lambda due, *, channel: None)
    app = FastAPI(title="relance", description="Tracking, unsubscribe and event intake of relance.", version="0.1.0")

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_down)

    def outbox_of(payload: dict[str, Any]) -> tuple[Outbox, Lead]:
        with Session(engine) as session:
            row = session.get(Outbox, payload.get("o"))
            lead = session.get(Lead, payload.get("l"))
            if row is None or lead is None or row.lead_id != lead.id or lead.email != payload.get("e"):
                raise HTTPException(404)
            session.expunge_all()
            return row, lead

    def record(type_: str, row: Outbox, lead: Lead, key: str | None = None, **extra: Any) -> None:
        """An event of a link in an email (click, open, unsubscribe): ingested like any other, channel `link`."""
        properties = {"scenario": row.scenario, "step_id": row.step_id, "enrollment_id": row.enrollment_id,
                      "outbox_id": row.id, **extra}
        with Session(engine) as session:
            result = ingest_events(session, workspace=workspace, events=[IncomingEvent(type_, lead.email, clock.now(), properties, key)],
                                   now=clock.now(), channel="link", machine_click_seconds=settings.machine_click_seconds)
            session.commit()
        announce(result.due, channel="link")

    def genuine(token: str, kind: str) -> dict[str, Any]:
        payload = tracking.verify(settings.verifying_keys, token, kind=kind)
        if payload is None:
            raise HTTPException(404)
        return payload

    @app.get("/health", tags=["operations"], response_model=Health,
             responses={503: {"model": Down, "description": "The database does not answer."}})
    def health() -> dict[str, str]:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return {"status": "ok", "database": "ok"}

    def follow(token: str, request: Request) -> RedirectResponse:
        """Record a click (a machine's when its request says so: relance.engagement) and send the reader on, whoever
        it is: a person behind a scanner reaches the page too."""
        payload = genuine(token, tracking.CLICK)
        row, lead = outbox_of(payload)
        link = payload["u"][:inputs.PROPERTY_TEXT_MAX]  # an event keeps that much of a text: a longer link is cut, kept
        if (machine := machine_request(request.method, request.headers.get("user-agent"))) is not None:
            record(MACHINE_CLICK, row, lead, link=link, machine=machine)
        else:
            record("email_clicked", row, lead, link=link)
        return RedirectResponse(payload["u"], status_code=302)

    @app.get("/c/{token}", tags=["tracking"], response_class=RedirectResponse, status_code=302,
             responses={**REDIRECT, **answers(404, link=True)})
    def click(token: str, request: Request) -> RedirectResponse:
        return follow(token, request)

    @app.head("/c/{token}", tags=["tracking"], response_class=RedirectResponse, status_code=302,
              responses={**REDIRECT, **answers(404, link=True)})
    def click_checked(token: str, request: Request) -> RedirectResponse:
        """A scanner checking the link: redirected, recorded as a machine's click."""
        return follow(token, request)

    @app.get("/o/{token}.gif", tags=["tracking"], response_class=Response, responses={**GIF, **answers(404, link=True)})
    def open_pixel(token: str) -> Response:
        row, lead = outbox_of(genuine(token, tracking.OPEN))
        record("email_opened", row, lead)
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    @app.get("/u/{token}", tags=["unsubscribe"], response_class=HTMLResponse, responses=answers(404, link=True, page=True))
    def unsubscribe_page(token: str) -> HTMLResponse:
        """The three choices (everything, only the newsletter, pause 3 months) in the lead's language; changes nothing."""
        _, lead = outbox_of(genuine(token, tracking.UNSUBSCRIBE))
        if lead.suppressed:
            return pages.done_page(lead.language, email=lead.email, choice="all")
        with Session(engine) as session:
            chosen = preferences_of(session, [lead.email], now=clock.now()).get(lead.email)
        current = None if chosen is None else "newsletter" if chosen.scope == EXCEPT_NEWSLETTER else "pause"
        return pages.choices_page(lead.language, email=lead.email, current=current, until=chosen and chosen.until)

    @app.post("/u/{token}", tags=["unsubscribe"], response_class=HTMLResponse, openapi_extra=UNSUBSCRIBE_FORM,
              responses={**answers(404, 413, link=True, page=True), 400: BAD_CHOICE})
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        """RFC 8058's one-click POST (`List-Unsubscribe=One-Click`: everything), or the page's `choice`."""
        payload = genuine(token, tracking.UNSUBSCRIBE)
        form = (await request.body()).decode("utf-8", "replace")
        choice = "all" if "List-Unsubscribe=One-Click" in form else (parse_qs(form).get("choice") or [None])[-1]
        row, lead = outbox_of(payload)
        if choice == "all":
            # the event suppresses (relance.suppression, through ingestion); one per lead, however often the link is posted
            record("unsubscribed", row, lead, key=f"unsubscribe:{lead.id}")
            return pages.done_page(lead.language, email=lead.email, choice="all")
        if choice not in pages.CHOICES:
            return pages.bad_choice_page(lead.language, email=lead.email)
        if lead.suppressed:  # suppressed for good already (a bounce, an earlier "everything"): nothing is less than that
            return pages.done_page(lead.language, email=lead.email, choice="all")
        now = clock.now()
        scope, until = (EXCEPT_NEWSLETTER, None) if choice == "newsletter" else (ALL, now + PAUSE)
        with Session(engine) as session:
            held = set_preference(session, email=lead.email, scope=scope, until=until, source=f"link:{choice}", now=now)
            session.commit()
        if not held:  # suppressed for good meanwhile: nothing is less than that
            return pages.done_page(lead.language, email=lead.email, choice="all")
        return pages.done_page(lead.language, email=lead.email, choice=choice, until=until)

    def bearer(authorization: Annotated[str | None, Header()] = None) -> None:
        if not settings.api_token:
            raise HTTPException(503, "event intake is off: set RELANCE_API_TOKEN")
        if not _bears(authorization, settings.api_token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/events", tags=["events"], dependencies=[Depends(bearer)], response_model=Stored,
              responses=answers(400, 413, *SECURED))
    def post_events(body: EventsBody) -> dict[str, int]:
        events = body if isinstance(body, list) else [body]
        now = clock.now()
        incoming = []
        for item in events:
            properties = dict(item.properties)
            if item.consent is not None:
                properties.update(consent_source=item.consent.source, consent_wording=item.consent.wording,
                                  consent_at=ensure_utc(item.consent.at or item.occurred_at or now).isoformat(),
                                  consent_granted=item.consent.granted)
            if item.legitimate_interest is not None:
                properties.update(basis="legitimate_interest", basis_source=item.legitimate_interest.source)
            incoming.append(IncomingEvent(item.type, item.email, ensure_utc(item.occurred_at or now), properties, item.idempotency_key))
        try:
            with Session(engine) as session:
                result = ingest_events(session, workspace=workspace, events=incoming, now=now, channel="api")
                session.commit()
            announce(result.due, channel="api")
        except UnknownLead as exc:
            index = next(i for i, e in enumerate(incoming) if e.email.strip().lower() in str(exc))
            raise HTTPException(422, [{"loc": ["body", index, "email"], "msg": str(exc), "type": "unknown_lead"}]) from exc
        except BadEvent as exc:  # e.g. an occurred_at in the future, a country that is none, a consent_at that is no date
            raise HTTPException(422, [{"loc": ["body", exc.index, *exc.loc], "msg": str(exc),
                                       "type": "bad_property" if exc.loc[0] == "properties" else "bad_event"}]) from exc
        return {"stored": result.stored, "duplicates": result.duplicates, "enrolled": result.enrolled, "woken": result.woken}

    _deal_routes(app, engine, workspace, clock, bearer)  # before /sales/{email}/{verdict}, which would take won and lost

    @app.get("/sales/handoffs", tags=["sales"], dependencies=[Depends(bearer)], response_model=list[OpenHandoff],
             responses=answers(*SECURED))
    def sales_handoffs(owner: Annotated[str | None, Query(max_length=inputs.EMAIL_MAX), _shared(_owner)] = None,
                       overdue: bool = False) -> list[dict[str, Any]]:
        """The open hand-offs, soonest deadline first; minutes left before target and deadline (negative: overdue)."""
        with Session(engine) as session:
            rows = open_handoffs(session, now=clock.now(), owner=owner, overdue=overdue)
        return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()} for row in rows]

    @app.post("/sales/{email}/reassign", tags=["sales"], dependencies=[Depends(bearer)], response_model=Reassigned,
              responses=answers(400, 404, 409, 413, *SECURED))
    def sales_reassign(email: LeadEmail, body: ReassignIn) -> dict[str, Any]:
        """Give the lead's open hand-off to another owner (emailed); the SLA deadline does not move."""
        with Session(engine) as session:
            with sales_errors():
                handoff = reassign(session, email=email, to=body.to, by=body.by, now=clock.now())
            session.commit()
            return {"email": email.lower(), "status": handoff.status, "owner": handoff.owner, "team": handoff.team,
                    "deadline_at": handoff.deadline_at.isoformat()}

    @app.post("/sales/{email}/{verdict}", tags=["sales"], dependencies=[Depends(bearer)], response_model=Answered,
              responses=answers(400, 404, 409, 413, *SECURED))
    def sales_answer(email: LeadEmail, verdict: Literal["accept", "reject", "later"], body: SalesAnswerIn) -> dict[str, Any]:
        """Sales answers a handoff: accept (BANT), reject (reason), or later (date)."""
        reply = Answer(verdict, body.by, reason=body.reason, note=body.note, bant=body.bant,
                       until=ensure_utc(body.until) if body.until else None)
        with Session(engine) as session:
            with sales_errors():
                handoff = answer(session, email=email, reply=reply, scoring=workspace.scoring, now=clock.now())
            session.commit()
            return {"email": email.lower(), "status": handoff.status, "owner": handoff.owner,
                    "later_until": handoff.later_until.isoformat() if handoff.later_until else None}

    @app.get("/leads/{email}/export", tags=["privacy"], dependencies=[Depends(bearer)], response_model=Held,
             responses=answers(404, *SECURED))
    def lead_export(email: LeadEmail) -> dict[str, Any]:
        """Everything relance holds about a person (art. 15 and 20): profile, consent, events, emails, hand-offs, deals."""
        with Session(engine) as session:
            held = export(session, email=email)
        if held is None:
            raise HTTPException(404, f"no lead with email {email.strip().lower()!r}")
        return jsonable_encoder(held)

    @app.delete("/leads/{email}", tags=["privacy"], dependencies=[Depends(bearer)], response_model=Forgot,
                responses=answers(404, *SECURED))
    def lead_forget(email: LeadEmail) -> dict[str, Any]:
        """Erase a person everywhere (art. 17); the address's hash stays on the suppression list, never mailed again."""
        with Session(engine) as session:
            done = forget(session, email=email, now=clock.now())
            session.commit()
        if done is None:
            raise HTTPException(404, f"no lead with email {email.strip().lower()!r}")
        return {"email": email.strip().lower(), "status": "already forgotten" if done.already else "forgotten"}

    return app


@contextmanager
def sales_errors() -> Iterator[None]:
    """What sales cannot do, as HTTP: an unknown lead 404, a closed hand-off 409, a bad answer 422 naming its field."""
    try:
        yield
    except NoSuchLead as exc:
        raise HTTPException(404, str(exc)) from exc
    except HandoffClosed as exc:
        raise HTTPException(409, str(exc)) from exc
    except BadAnswer as exc:
        raise HTTPException(422, [{"loc": ["body", exc.field], "msg": str(exc), "type": "bad_answer"}]) from exc


def _deal_routes(app: FastAPI, engine: Engine, workspace: Workspace, clock: Clock, bearer) -> None:
    """`POST /sales/{email}/won` and `/lost`: a CRM records the deals it closes (docs/economics.md)."""

    def close(email: str, closing: Closing) -> dict[str, Any]:
        with Session(engine) as session:
            with sales_errors():
                deal = record_deal(session, email=email, closing=closing, scoring=workspace.scoring, now=clock.now())
            session.commit()
            return {"email": email.strip().lower(), "outcome": deal.outcome, "kind": deal.kind, "amount": deal.amount,
                    "margin": deal.margin, "reason": deal.reason, "on": deal.closed_at.isoformat(),
                    "stage": session.get(Lead, deal.lead_id).stage}

    @app.post("/sales/{email}/won", tags=["sales"], dependencies=[Depends(bearer)], response_model=Closed,
              responses=answers(400, 404, 413, *SECURED))
    def sales_won(email: LeadEmail, body: DealWonIn) -> dict[str, Any]:
        """Sales won a deal: amount, gross margin, the day; the lead becomes a customer."""
        return close(email, Closing("won", body.by, amount=body.amount, margin=body.margin, note=body.note,
                                    on=ensure_utc(body.on) if body.on else None))

    @app.post("/sales/{email}/lost", tags=["sales"], dependencies=[Depends(bearer)], response_model=Closed,
              responses=answers(400, 404, 413, *SECURED))
    def sales_lost(email: LeadEmail, body: DealLostIn) -> dict[str, Any]:
        """Sales lost a deal: the reason, the day; the lead goes back to nurturing."""
        return close(email, Closing("lost", body.by, reason=body.reason, note=body.note,
                                    on=ensure_utc(body.on) if body.on else None))
