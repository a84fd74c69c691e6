"""The HTTP API (`relance serve`): click and open tracking, one-click unsubscribe, event intake.

Tracking and unsubscribe URLs carry signed tokens (relance.email.tracking); a forged or altered
token gets 404 and records nothing. `POST /events` takes one event or a batch, behind the
bearer token RELANCE_API_TOKEN.
"""

from __future__ import annotations

import base64
import hmac
from contextlib import contextmanager
from datetime import datetime
from html import escape
from typing import Annotated, Any, Iterator, Literal, Union

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, text
from sqlmodel import Session

from relance.clock import Clock, SystemClock, ensure_utc
from relance.deals import Closing, record_deal
from relance.email import tracking
from relance.ingest import BadEvent, IncomingEvent, UnknownLead, ingest_events
from relance.library import Library
from relance.sales import Answer, BadAnswer, HandoffClosed, NoSuchLead, answer, open_handoffs, reassign
from relance.settings import Settings
from relance.store.tables import Lead, Outbox

MAX_BODY_BYTES = 1_000_000
MAX_BATCH = 1000
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
Scalar = Union[str, int, float, bool, None]


class Consent(BaseModel):
    """Proof of consent given (or withdrawn) with a form: where, when, and the exact wording the person accepted.
    Kept on the lead with every earlier record (`relance lead show`); a withdrawal stops every email to the address."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=200, description="Form or page where consent was given.")
    wording: str = Field(min_length=1, max_length=2000, description="The text the person accepted.")
    at: datetime | None = Field(None, description="When (default: the event's time).")
    granted: bool = Field(True, description="false: the person withdraws consent.")


class SalesAnswerIn(BaseModel):
    """Sales' answer to a handoff."""

    model_config = ConfigDict(extra="forbid")
    by: str = Field("sales", min_length=1, max_length=320, description="Who answers (recorded in the stage history).")
    reason: str | None = Field(None, description="reject: no-budget, no-need, bad-timing, not-decision-maker, competitor, bad-fit, unreachable, other.")
    note: str = Field("", max_length=2000)
    bant: dict[str, str] | None = Field(None, description="accept: budget, authority, need, timing.")
    until: datetime | None = Field(None, description="later: the re-engage date (default: later.default_delay).")


class ReassignIn(BaseModel):
    """Give a lead's open hand-off to another owner."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=3, max_length=320, description="The new owner's email (gets the hand-off email).")
    by: str = Field("sales", min_length=1, max_length=320, description="Who reassigns (recorded with the change).")


class DealWonIn(BaseModel):
    """A deal sales won: the lead becomes a customer (a customer's next deal is an upsell)."""

    model_config = ConfigDict(extra="forbid")
    by: str = Field("sales", min_length=1, max_length=320, description="Who won it (recorded in the stage history).")
    amount: float = Field(0.0, description="What the deal is worth.")
    margin: float = Field(0.0, description="Its gross margin, part of the amount: what ROI counts.")
    on: datetime | None = Field(None, description="The day it was won (default: now; never in the future).")
    note: str = Field("", max_length=2000)


class DealLostIn(BaseModel):
    """A deal sales lost: the lead goes back to nurturing with the reason (a customer stays a customer)."""

    model_config = ConfigDict(extra="forbid")
    by: str = Field("sales", min_length=1, max_length=320, description="Who lost it (recorded in the stage history).")
    reason: str = Field(description="price, competitor, no-budget, no-decision, bad-timing, no-need, missing-feature, unreachable, other.")
    on: datetime | None = Field(None, description="The day it was lost (default: now; never in the future).")
    note: str = Field("", max_length=2000)


class EventIn(BaseModel):
    """One event from the website, a CRM or any system."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, examples=["form_submitted", "downloaded", "page_visited"])
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    occurred_at: datetime | None = Field(None, description="When it happened (default: now).")
    properties: dict[str, Scalar] = Field(default_factory=dict, max_length=50)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    consent: Consent | None = None


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=fr><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{escape(title)}</title><body style='font-family:sans-serif;max-width:32rem;margin:4rem auto'>"
        f"<h1 style='font-size:1.4rem'>{escape(title)}</h1>{body}</body></html>"
    )


def create_app(settings: Settings, *, engine: Engine, library: Library, clock: Clock | None = None) -> FastAPI:
    """The app over one database and one scenarios folder."""
    clock = clock or SystemClock()
    app = FastAPI(title="relance", description="Tracking, unsubscribe and event intake of relance.", version="0.1.0")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

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
        ingest_events(engine, library, [IncomingEvent(type_, lead.email, clock.now(), properties, key)], now=clock.now(),
                      channel="link")

    def genuine(token: str, kind: str) -> dict[str, Any]:
        payload = tracking.verify(settings.secret_key, token, kind=kind)
        if payload is None:
            raise HTTPException(404)
        return payload

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, str]:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return {"status": "ok", "database": "ok"}

    @app.get("/c/{token}", tags=["tracking"], response_class=RedirectResponse, status_code=302)
    def click(token: str) -> RedirectResponse:
        payload = genuine(token, tracking.CLICK)
        row, lead = outbox_of(payload)
        record("email_clicked", row, lead, link=payload["u"])
        return RedirectResponse(payload["u"], status_code=302)

    @app.get("/o/{token}.gif", tags=["tracking"])
    def open_pixel(token: str) -> Response:
        row, lead = outbox_of(genuine(token, tracking.OPEN))
        record("email_opened", row, lead)
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    @app.get("/u/{token}", tags=["unsubscribe"], response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> HTMLResponse:
        _, lead = outbox_of(genuine(token, tracking.UNSUBSCRIBE))
        if lead.suppressed == "unsubscribed":
            return _page("Vous êtes désinscrit", f"<p>{escape(lead.email)} ne recevra plus nos emails.</p>")
        return _page(
            "Se désinscrire",
            f"<p>Ne plus recevoir nos emails à l'adresse <strong>{escape(lead.email)}</strong> ?</p>"
            f"<form method=post><input type=hidden name=List-Unsubscribe value=One-Click>"
            f"<button type=submit style='font-size:1rem;padding:.5rem 1rem'>Me désinscrire</button></form>",
        )

    @app.post("/u/{token}", tags=["unsubscribe"], response_class=HTMLResponse)
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        payload = genuine(token, tracking.UNSUBSCRIBE)
        form = (await request.body()).decode("utf-8", "replace")
        if "List-Unsubscribe=One-Click" not in form:
            raise HTTPException(400, "expected the body List-Unsubscribe=One-Click (RFC 8058)")
        row, lead = outbox_of(payload)
        # the event suppresses (relance.suppression, through ingestion); one per lead, however often the link is posted
        record("unsubscribed", row, lead, key=f"unsubscribe:{lead.id}")
        return _page("Vous êtes désinscrit", f"<p>{escape(lead.email)} ne recevra plus nos emails.</p>")

    def bearer(authorization: Annotated[str | None, Header()] = None) -> None:
        if not settings.api_token:
            raise HTTPException(503, "event intake is off: set RELANCE_API_TOKEN")
        expected = f"Bearer {settings.api_token}"
        if authorization is None or not hmac.compare_digest(authorization, expected):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/events", tags=["events"], dependencies=[Depends(bearer)])
    def post_events(body: Union[EventIn, Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]]) -> dict[str, int]:
        events = body if isinstance(body, list) else [body]
        now = clock.now()
        incoming = []
        for item in events:
            properties = dict(item.properties)
            if item.consent is not None:
                properties.update(consent_source=item.consent.source, consent_wording=item.consent.wording,
                                  consent_at=ensure_utc(item.consent.at or item.occurred_at or now).isoformat(),
                                  consent_granted=item.consent.granted)
            incoming.append(IncomingEvent(item.type, item.email, ensure_utc(item.occurred_at or now), properties, item.idempotency_key))
        try:
            result = ingest_events(engine, library, incoming, now=now, channel="api")
        except UnknownLead as exc:
            index = next(i for i, e in enumerate(incoming) if e.email.strip().lower() in str(exc))
            raise HTTPException(422, [{"loc": ["body", index, "email"], "msg": str(exc), "type": "unknown_lead"}]) from exc
        except BadEvent as exc:  # e.g. a consent_at property that is no date
            raise HTTPException(422, [{"loc": ["body", exc.index, "properties", exc.field], "msg": str(exc),
                                       "type": "bad_property"}]) from exc
        return {"stored": result.stored, "duplicates": result.duplicates, "enrolled": result.enrolled, "woken": result.woken}

    _deal_routes(app, engine, library, clock, bearer)  # before /sales/{email}/{verdict}, which would take won and lost

    @app.get("/sales/handoffs", tags=["sales"], dependencies=[Depends(bearer)])
    def sales_handoffs(owner: str | None = None, overdue: bool = False) -> list[dict[str, Any]]:
        """The open hand-offs, soonest deadline first; minutes left before target and deadline (negative: overdue)."""
        with Session(engine) as session:
            rows = open_handoffs(session, now=clock.now(), owner=owner, overdue=overdue)
        return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()} for row in rows]

    @app.post("/sales/{email}/reassign", tags=["sales"], dependencies=[Depends(bearer)])
    def sales_reassign(email: str, body: ReassignIn) -> dict[str, Any]:
        """Give the lead's open hand-off to another owner (emailed); the SLA deadline does not move."""
        with Session(engine) as session:
            with sales_errors():
                handoff = reassign(session, email=email, to=body.to, by=body.by, now=clock.now())
            session.commit()
            return {"email": email.lower(), "status": handoff.status, "owner": handoff.owner, "team": handoff.team,
                    "deadline_at": handoff.deadline_at.isoformat()}

    @app.post("/sales/{email}/{verdict}", tags=["sales"], dependencies=[Depends(bearer)])
    def sales_answer(email: str, verdict: Literal["accept", "reject", "later"], body: SalesAnswerIn) -> dict[str, Any]:
        """Sales answers a handoff: accept (BANT), reject (reason), or later (date)."""
        reply = Answer(verdict, body.by, reason=body.reason, note=body.note, bant=body.bant,
                       until=ensure_utc(body.until) if body.until else None)
        with Session(engine) as session:
            with sales_errors():
                handoff = answer(session, email=email, reply=reply, scoring=library.scoring, now=clock.now())
            session.commit()
            return {"email": email.lower(), "status": handoff.status, "owner": handoff.owner,
                    "later_until": handoff.later_until.isoformat() if handoff.later_until else None}

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


def _deal_routes(app: FastAPI, engine: Engine, library: Library, clock: Clock, bearer) -> None:
    """`POST /sales/{email}/won` and `/lost`: a CRM records the deals it closes (docs/economics.md)."""

    def close(email: str, closing: Closing) -> dict[str, Any]:
        with Session(engine) as session:
            with sales_errors():
                deal = record_deal(session, email=email, closing=closing, scoring=library.scoring, now=clock.now())
            session.commit()
            return {"email": email.strip().lower(), "outcome": deal.outcome, "kind": deal.kind, "amount": deal.amount,
                    "margin": deal.margin, "reason": deal.reason, "on": deal.closed_at.isoformat(),
                    "stage": session.get(Lead, deal.lead_id).stage}

    @app.post("/sales/{email}/won", tags=["sales"], dependencies=[Depends(bearer)])
    def sales_won(email: str, body: DealWonIn) -> dict[str, Any]:
        """Sales won a deal: amount, gross margin, the day; the lead becomes a customer."""
        return close(email, Closing("won", body.by, amount=body.amount, margin=body.margin, note=body.note,
                                    on=ensure_utc(body.on) if body.on else None))

    @app.post("/sales/{email}/lost", tags=["sales"], dependencies=[Depends(bearer)])
    def sales_lost(email: str, body: DealLostIn) -> dict[str, Any]:
        """Sales lost a deal: the reason, the day; the lead goes back to nurturing."""
        return close(email, Closing("lost", body.by, reason=body.reason, note=body.note,
                                    on=ensure_utc(body.on) if body.on else None))
