"""`relance preview`: a template as one lead (or the sample lead) would receive it, before any send."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from relance.composing import template_context
from relance.email.message import sender_name
from relance.email.templates import INTERNAL, SAMPLE_CONTEXT, RenderedEmail, TemplateLibrary
from relance.sales import NOTICE_SUBJECTS, staff_notice
from relance.settings import Settings
from relance.store.repo import find_lead
from relance.store.tables import Handoff, Outbox
from relance.workspace import Workspace


@dataclass(frozen=True)
class Preview:
    email: RenderedEmail
    used_by: str | None  # "scenario/step" whose subject and preheader were used, if a scenario sends it
    lead: str  # whose data filled it in


def sent_by(workspace: Workspace, template: str) -> tuple[str, str, str | None] | None:
    """The first scenario step that sends this template: ("scenario/step", subject, preheader)."""
    for name, plan in sorted(workspace.plans.items()):
        for step_id in plan.order:
            step = plan.steps[step_id]
            if getattr(step, "send", None) == template:
                return f"{name}/{step_id}", step.subject, step.preheader
    return None


def preview(
    settings: Settings, workspace: Workspace, template: str, *, templates: TemplateLibrary, session: Session | None = None,
    email: str | None = None, subject: str | None = None,
) -> Preview:
    """Render `template` with a stored lead's data (`email`) or the sample lead's; the subject and
    preheader come from the scenario step that sends it unless `subject` is given; `session` reads the lead. Links are shown
    as written (not tracked) and the unsubscribe link is a placeholder: nothing is stored."""
    if templates.path_of(template) is None:  # the folder's own, or relance's default for staff mail
        raise LookupError(f"no template {template!r} in {settings.templates_dir}; there are: {', '.join(templates.names())}")
    step = sent_by(workspace, template)
    used_by, step_subject, preheader = step if step else (None, None, None)
    staff = template == "sales-handoff"  # relance writes these itself: its own subject, a hand-off's context
    if staff:
        step_subject = NOTICE_SUBJECTS["handoff"]
    subject = subject or step_subject or f"(no subject: no scenario sends {template!r}; give --subject)"
    scenario, _, step_id = (used_by or "preview/preview").partition("/")
    unsubscribe = f"{settings.public_url.rstrip('/')}/u/preview"
    if email is None:
        context = {**SAMPLE_CONTEXT, "unsubscribe_url": unsubscribe, "scenario": scenario, "step_id": step_id,
                   "postal_address": settings.postal_address, "sender": sender_name(settings.from_)}
        who = SAMPLE_CONTEXT["lead"]["email"] + " (sample lead)"
    else:
        lead = find_lead(session, email) if session is not None else None
        if lead is None:
            raise LookupError(f"no lead with email {email!r}")
        options: dict = {"preheader": preheader}
        kind = "internal" if staff else "lead"
        if staff:  # the lead's latest hand-off; one never handed off shows the sample hand-off
            handoff = latest_handoff(session, lead.id)
            sample = {k: SAMPLE_CONTEXT[k] for k in ("handoff", "score_explanation", "recent_activity")}
            options = {"context": staff_notice(session, handoff, lead, kind="handoff")[1] if handoff else sample}
        row = Outbox(scenario=scenario, step_id=step_id, kind=kind, options=options)
        context = template_context(lead, settings, row, unsubscribe)
        who = lead.email
    rendered = templates.render(template, subject=subject, context=context, preheader=preheader, to_lead=template not in INTERNAL)
    return Preview(rendered, used_by, who)


def latest_handoff(session: Session, lead_id: int):
    """The lead's most recent hand-off, if any: what `relance preview sales-handoff --lead` shows."""
    return session.exec(select(Handoff).where(Handoff.lead_id == lead_id).order_by(Handoff.id.desc()).limit(1)).scalars().first()
