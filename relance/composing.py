"""Composing an email: the one place that answers "where does an email get its links?".

An outbox row and its lead make the template's context (`template_context`: what every template can use) and
the email itself (`compose`): a lead's email gets tracked links, an open pixel and a signed one-click
unsubscribe; staff mail (hand-off, SLA, notify) gets none of the lead's links. The tick's delivery composes
every email here; `relance preview` uses the context with a placeholder unsubscribe link and no tracking.
"""

from __future__ import annotations

from typing import Any

from relance.email import tracking
from relance.email.message import OutgoingEmail, sender_name
from relance.email.templates import TemplateLibrary
from relance.settings import Settings
from relance.store.tables import PROFILE_FIELDS, Lead, Outbox, profile_of


def template_context(lead: Lead, settings: Settings, outbox: Outbox, unsubscribe: str | None = None) -> dict[str, Any]:
    """What every template can use (see relance.email.templates); `unsubscribe` if already signed.

    Internal emails (hand-off, SLA, notify) go to staff: they carry no link of the lead's
    (a rep who clicks "unsubscribe" in his own mail must not unsubscribe the lead) and say `internal`."""
    internal = outbox.kind != "lead"
    return {
        "lead": {**profile_of(lead), "score": lead.score, "grade": lead.grade, "stage": lead.stage,
                 "fields": dict(lead.fields or {})},
        "internal": internal,
        "unsubscribe_url": None if internal else unsubscribe or tracking.unsubscribe_url(
            public_url=settings.public_url, secret=settings.secret_key, outbox_id=outbox.id, lead_id=lead.id, email=lead.email
        ),
        "postal_address": settings.postal_address,
        "sender": sender_name(settings.from_),
        "preheader": (outbox.options or {}).get("preheader") or "",
        "scenario": outbox.scenario,
        "step_id": outbox.step_id,
        **(outbox.options or {}).get("context", {}),
    }


OUTBOX_READ = ("id", "lead_id", "to_address", "template", "subject", "kind", "options", "scenario", "step_id",
               "marketing", "priority")  # what composing and the sending policy read
LEAD_READ = ("id", "email", *PROFILE_FIELDS, "score", "grade", "stage", "fields", "suppressed")  # what sending reads


def compose(row, lead, *, settings: Settings, templates: TemplateLibrary) -> OutgoingEmail:
    """The email an outbox row stands for: rendered, and for a lead tracked with one-click unsubscribe,
    its unsubscribe link and postal address shown (relance's footer when the template has none)."""
    if row.kind != "lead":
        rendered = templates.render(row.template, subject=row.subject, context=template_context(lead, settings, row),
                                    preheader=row.options.get("preheader"))
        html, headers = rendered.html, {}
    else:  # leads get tracked links, an open pixel and one-click unsubscribe
        identity = dict(public_url=settings.public_url, secret=settings.secret_key, outbox_id=row.id,
                        lead_id=lead.id, email=lead.email)
        unsubscribe = tracking.unsubscribe_url(**identity)
        rendered = templates.render(row.template, subject=row.subject, context=template_context(lead, settings, row, unsubscribe),
                                    preheader=row.options.get("preheader"), to_lead=True)  # footer added if the template lacks it
        html = tracking.track_html(rendered.html, **identity, skip=(unsubscribe,))
        headers = tracking.unsubscribe_headers(unsubscribe)
    return OutgoingEmail(
        to=row.to_address, from_=row.options.get("from") or settings.from_,
        reply_to=row.options.get("reply_to") or settings.reply_to, subject=rendered.subject, html=html,
        text=rendered.text, headers=headers, tags={"scenario": row.scenario or "none", "step": row.step_id or "none"},
        outbox_id=row.id,
    )
