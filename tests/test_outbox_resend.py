"""Staff email is never lost silently, and an operator can send a failed message again.

Real parts throughout: the database of each backend, the file transport writing .eml files, a real SMTP
server (aiosmtpd) refusing some recipients for good, and the `relance` command line.
"""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import default as modern
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.policy import NO_POLICY
from relance.cli import app
from relance.delivery import deliver_pending
from relance.email.templates import TemplateLibrary
from relance.sales import open_handoff
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from relance.store.tables import Lead, Outbox
from relance.suppression import suppress
from relance.workspace import load_scoring
from tests.basis import professional

OWNER, MANAGER = "claire@example.com", "direction@example.com"
SCORING = f"sales: {{owners: [{OWNER}], manager: {MANAGER}}}\n"
MARKETING = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}. {{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A marketer's own folder: one template of hers, no sales-handoff.mjml, no layout.mjml."""
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "scoring.yaml").write_text(SCORING, encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "promo.mjml").write_text(MARKETING, encoding="utf-8")
    return tmp_path


def _settings(folder: Path, db_url: str, **kw) -> Settings:
    return Settings(database_url=db_url, scenarios_dir=folder / "scenarios", templates_dir=folder / "templates",
                    outbox_dir=folder / "outbox", **{"transport": "file", **kw})


def _handed_off(engine, folder: Path, now, email="zoe@acme.example") -> int:
    """A lead handed to sales at `now`: the id of the email to its owner (pending in the outbox)."""
    with Session(engine) as session:
        lead = upsert_lead(session, email=email, now=now, first_name="Zoé", last_name="Martin", company="ACME", fields=professional())
        session.flush()
        open_handoff(session, lead, scoring=load_scoring(folder / "scenarios"), now=now, source="test")
        session.commit()
        return session.execute(select(Outbox.id).where(Outbox.lead_id == lead.id, Outbox.template == "sales-handoff")).scalar_one()


def _marketing(engine, now, email="lea@acme.example") -> int:
    """A nurture email to a lead, written at `now` and still pending."""
    with Session(engine) as session:
        lead = upsert_lead(session, email=email, now=now, first_name="Léa", fields=professional())
        session.flush()
        row = Outbox(lead_id=lead.id, step_id="promo", template="promo", subject="Pour vous", to_address=email,
                     kind="lead", created_at=now)
        session.add(row)
        session.commit()
        return row.id


def _rows(engine) -> dict[int, Outbox]:
    with Session(engine) as session:
        return {r.id: r for r in session.execute(select(Outbox).order_by(Outbox.id)).scalars()}


def _eml(settings: Settings, outbox_id: int) -> Message:
    return message_from_bytes((settings.outbox_dir / f"{outbox_id}.eml").read_bytes(), policy=modern)


def _text(message: Message) -> str:
    return "".join(part.get_payload(decode=True).decode() for part in message.walk() if part.get_content_type() == "text/plain")


# --------------------------------------------------------------------------- relance's default internal templates


def test_a_templates_folder_without_sales_handoff_sends_the_handoff_from_relances_default(engine, db_url, folder, clock):
    settings = _settings(folder, db_url)
    handoff = _handed_off(engine, folder, clock.now())
    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    row = _rows(engine)[handoff]
    assert (row.status, row.error, row.to_address) == ("sent", None, OWNER)
    text = _text(_eml(settings, handoff))
    assert "Un lead est prêt pour vous" in text and "zoe@acme.example" in text and "Email interne de relance" in text


def test_the_folders_own_sales_handoff_wins_over_relances_default(engine, db_url, folder, clock):
    settings = _settings(folder, db_url)
    (folder / "templates" / "sales-handoff.mjml").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-text>Notre gabarit : {{ lead.email }}, avant le {{ handoff.deadline }}</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>", encoding="utf-8")
    handoff = _handed_off(engine, folder, clock.now())
    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    text = _text(_eml(settings, handoff))
    assert "Notre gabarit : zoe@acme.example, avant le" in text and "Un lead est prêt pour vous" not in text


@pytest.fixture
def cli(folder, db_url, monkeypatch):
    """`relance ...` on this folder and database, with the file transport."""
    for name, value in {"DATABASE_URL": db_url, "SCENARIOS_DIR": folder / "scenarios", "TEMPLATES_DIR": folder / "templates",
                        "OUTBOX_DIR": folder / "outbox", "TRANSPORT": "file"}.items():
        monkeypatch.setenv(f"RELANCE_{name}", str(value))
    get_settings.cache_clear()

    def relance(*args: str):
        return CliRunner().invoke(app, [str(a) for a in args])

    yield relance
    get_settings.cache_clear()


NURTURE = """scenario: nurture
trigger: {event: downloaded}
steps:
  - {id: promo, send: promo, subject: "Pour vous"}
"""


def test_validate_says_which_internal_templates_are_in_use_and_checks_the_folders_own(cli, folder):
    (folder / "scenarios" / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    result = cli("validate")
    assert result.exit_code == 0, result.output
    assert "internal template sales-handoff (hand-off, SLA, withdrawn and notify emails): relance's default" in result.output
    assert "internal template staff-mail-failed (the manager's alert when staff mail fails): relance's default" in result.output

    (folder / "templates" / "sales-handoff.mjml").write_text("<mjml><mj-body><mj-text>{% if %}</mj-text></mj-body></mjml>")
    broken = cli("validate")
    assert broken.exit_code == 1
    own = str(folder / "templates" / "sales-handoff.mjml")
    assert f"internal template sales-handoff (hand-off, SLA, withdrawn and notify emails): {own}" in broken.output
    assert f"{own}: template 'sales-handoff': Jinja syntax error at sales-handoff.mjml:1" in broken.output


# --------------------------------------------------------------------------- staff mail never expires silently

BROKEN = "<mjml><mj-body><mj-section><mj-column><mj-text>{{ handoff.owner_phone }}</mj-text></mj-column></mj-section></mj-body></mjml>"


def test_a_handoff_email_still_pending_after_two_days_is_sent_while_a_nurture_email_expires(engine, db_url, folder, clock):
    settings = _settings(folder, db_url)
    handoff = _handed_off(engine, folder, clock.now())  # written, then no delivery ran for two days
    nurture = _marketing(engine, clock.now())
    result = deliver_pending(engine, settings, now=clock.advance(timedelta(hours=49)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    rows = _rows(engine)
    assert (rows[handoff].status, rows[handoff].error) == ("sent", None)
    assert (rows[nurture].status, rows[nurture].error) == ("failed", "expired: still pending 48 h after it was written")
    assert (result.sent, result.failed) == (1, 1)
    assert not (settings.outbox_dir / f"{nurture}.eml").exists()


class Mailbox:
    """An aiosmtpd handler refusing some recipients for good (550), taking the others."""

    def __init__(self, refused: set[str]) -> None:
        self.refused, self.received = refused, []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), message_from_bytes(envelope.original_content, policy=modern)))
        return "250 OK"


@pytest.fixture
def smtp_server():
    """function(refused addresses) -> (port, mailbox) of a real SMTP server on 127.0.0.1."""
    from aiosmtpd.controller import Controller

    controllers = []

    def start(refused: set[str]) -> tuple[int, Mailbox]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mailbox = Mailbox(refused)
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return port, mailbox

    yield start
    for controller in controllers:
        controller.stop()


def test_a_handoff_email_refused_for_good_alerts_the_manager_with_one_email(engine, db_url, folder, clock, smtp_server):
    port, mailbox = smtp_server({OWNER})
    settings = _settings(folder, db_url, transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5)
    handoff = _handed_off(engine, folder, clock.now())
    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    rows = _rows(engine)
    assert rows[handoff].status == "failed" and "550" in rows[handoff].error
    [alert] = [r for r in rows.values() if r.id != handoff]
    assert (alert.status, alert.to_address, alert.template) == ("sent", MANAGER, "staff-mail-failed")
    [(to, message)] = mailbox.received
    assert to == [MANAGER] and message["Subject"] == f"Email interne non remis à {OWNER} : Zoé Martin (ACME)"
    text = _text(message)
    assert f"Un email interne n'a pas pu être remis à {OWNER} (l'email de hand-off)" in text
    assert "550" in text and "zoe@acme.example" in text and f"relance outbox resend {handoff}" in text
    assert message["List-Unsubscribe"] is None  # staff mail

    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    assert len(_rows(engine)) == 2 and len(mailbox.received) == 1  # one failure, one alert: nothing more


def test_an_alert_that_fails_is_not_alerted_about(engine, db_url, folder, clock, smtp_server):
    port, mailbox = smtp_server({OWNER, MANAGER})
    settings = _settings(folder, db_url, transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5)
    handoff = _handed_off(engine, folder, clock.now())
    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    rows = _rows(engine)
    assert [(r.template, r.to_address, r.status) for r in rows.values()] == [
        ("sales-handoff", OWNER, "failed"), ("staff-mail-failed", MANAGER, "failed")]
    assert rows[handoff + 1].options["alert_for"] == handoff and mailbox.received == []


def test_a_handoff_email_that_cannot_be_built_alerts_the_manager(engine, db_url, folder, clock):
    settings = _settings(folder, db_url)
    (folder / "templates" / "sales-handoff.mjml").write_text(BROKEN, encoding="utf-8")
    handoff = _handed_off(engine, folder, clock.now())
    (folder / "scenarios" / "scoring.yaml").unlink()  # delivery is handed the manager: it reads no scoring.yaml of its own
    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    rows = _rows(engine)
    assert rows[handoff].status == "failed" and rows[handoff].error.startswith("cannot be built")
    [alert] = [r for r in rows.values() if r.id != handoff]
    assert alert.status == "sent" and "cannot be built" in _text(_eml(settings, alert.id))


# --------------------------------------------------------------------------- the operator: list and resend


def test_an_operator_finds_a_failed_handoff_email_and_resends_it_once_the_template_is_fixed(engine, db_url, folder, clock, cli):
    settings = _settings(folder, db_url)
    own = folder / "templates" / "sales-handoff.mjml"
    own.write_text(BROKEN, encoding="utf-8")
    handoff = _handed_off(engine, folder, clock.now())
    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)

    listed = cli("outbox", "list", "--status", "failed", "--json")
    assert listed.exit_code == 0, listed.output
    [failed] = json.loads(listed.output)["messages"]
    assert (failed["id"], failed["kind"], failed["to"], failed["lead"]) == (handoff, "internal", OWNER, "zoe@acme.example")
    table = cli("outbox", "list")
    assert f"outbox {handoff}  failed  internal  to {OWNER}  sales-handoff (handoff:" in table.output
    assert "    cannot be built: RenderError: template 'sales-handoff': 'dict object' has no attribute 'owner_phone'" in table.output
    assert table.output.endswith("1 message(s)\n")

    own.unlink()  # fixed: relance's default is used again
    at = clock.advance(timedelta(hours=3))
    resent = cli("outbox", "resend", handoff, "--note", "template fixed", "--now", at.isoformat())
    assert resent.exit_code == 0, resent.output
    assert f"1 message(s) set to pending: the next tick sends them (outbox {handoff})" in resent.output
    row = _rows(engine)[handoff]
    assert row.status == "pending"
    assert row.error.startswith(f"resent by an operator at {at:%Y-%m-%d %H:%M} UTC: template fixed (it had failed: cannot be built")

    deliver_pending(engine, settings, now=at, templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    assert _rows(engine)[handoff].status == "sent"
    assert "Un lead est prêt pour vous" in _text(_eml(settings, handoff))
    again = cli("outbox", "resend", handoff)
    assert again.exit_code == 1 and f"outbox {handoff} was sent at {at:%Y-%m-%d %H:%M} UTC, not resent" in again.output


def test_a_resent_nurture_email_leaves_although_written_long_ago_and_expires_48_h_after_the_resend(engine, db_url, folder, clock, cli):
    settings = _settings(folder, db_url)
    first, second = _marketing(engine, clock.now()), _marketing(engine, clock.now(), email="ines@acme.example")
    deliver_pending(engine, settings, now=clock.advance(timedelta(hours=49)), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)  # both expire
    assert {r.status for r in _rows(engine).values()} == {"failed"}

    at = clock.advance(timedelta(days=5))
    assert cli("outbox", "resend", first, "--now", at.isoformat()).exit_code == 0
    deliver_pending(engine, settings, now=at + timedelta(minutes=1), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    assert _rows(engine)[first].status == "sent" and "Bonjour Léa" in _text(_eml(settings, first))

    assert cli("outbox", "resend", second, "--now", at.isoformat()).exit_code == 0
    deliver_pending(engine, settings, now=at + timedelta(hours=49), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)  # no delivery ran for two days after the resend
    row = _rows(engine)[second]
    assert (row.status, row.error) == ("failed", "expired: still pending 48 h after an operator put it back")


def test_an_unknown_email_settled_as_pending_leaves_although_written_long_ago(engine, db_url, folder, clock, cli):
    settings = _settings(folder, db_url)
    nurture = _marketing(engine, clock.now())
    with Session(engine) as session:
        session.execute(Outbox.__table__.update().where(Outbox.id == nurture).values(status="unknown", error="no answer"))
        session.commit()
    at = clock.advance(timedelta(days=3))
    assert cli("outbox", "resolve", nurture, "--as", "pending", "--now", at.isoformat()).exit_code == 0
    deliver_pending(engine, settings, now=at, templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    assert _rows(engine)[nurture].status == "sent"
    refused = cli("outbox", "resolve", nurture, "--as", "pending")
    assert refused.exit_code == 1 and f"outbox {nurture} is sent, not unknown: left as it is" in refused.output


def test_resend_refuses_what_it_must_not_send_again_saying_why(engine, db_url, folder, clock, cli):
    settings = _settings(folder, db_url)
    sent, suppressed, unknown = (_marketing(engine, clock.now(), email=e) for e in ("a@acme.example", "b@acme.example", "c@acme.example"))
    deliver_pending(engine, settings, now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=MANAGER, policy=NO_POLICY)
    with Session(engine) as session:
        session.execute(Outbox.__table__.update().where(Outbox.id == suppressed).values(status="failed", error="550 refused"))
        session.execute(Outbox.__table__.update().where(Outbox.id == unknown).values(status="unknown", error="no answer"))
        suppress(session, email="b@acme.example", reason="unsubscribed", source="test", now=clock.now())
        session.commit()
    result = cli("outbox", "resend", sent, suppressed, unknown, 999999)
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert f"outbox {sent} was sent at {clock.now():%Y-%m-%d %H:%M} UTC, not resent" in out
    assert f"outbox {suppressed}: b@acme.example is suppressed (unsubscribed), not resent" in out
    assert f"outbox {unknown} has an unknown outcome (it may have left): check the transport's logs, then " \
           f"`relance outbox resolve {unknown} --as pending|failed`" in out
    assert "outbox 999999: no such message" in out and "0 message(s) set to pending" in out
    rows = _rows(engine)
    assert [rows[i].status for i in (sent, suppressed, unknown)] == ["sent", "failed", "unknown"]
    bad = cli("outbox", "resend", sent, "--now", "yesterday")
    assert bad.exit_code == 2 and "--now" in bad.output
    wrong = cli("outbox", "list", "--status", "lost")
    assert wrong.exit_code == 2 and "'lost': choose one of pending, sending, unknown," in " ".join(wrong.output.split())
