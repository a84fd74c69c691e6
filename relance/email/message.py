"""An email ready to leave, and its MIME form (for the file and SMTP transports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid


@dataclass
class OutgoingEmail:
    to: str
    from_: str
    reply_to: str | None
    subject: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    outbox_id: int | None = None


def safe_header(name: str, value: str) -> str:
    """Refuse CR/LF in a header value: lead data must never add headers."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break: {value!r}")
    return value


def build_mime(email: OutgoingEmail, *, domain: str = "relance.local") -> EmailMessage:
    """multipart/alternative: text first, then HTML; Message-ID and Date set."""
    message = EmailMessage()
    message["From"] = safe_header("From", email.from_)
    message["To"] = safe_header("To", email.to)
    if email.reply_to:
        message["Reply-To"] = safe_header("Reply-To", email.reply_to)
    message["Subject"] = safe_header("Subject", email.subject)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=str(email.outbox_id) if email.outbox_id else None, domain=domain)
    for name, value in email.headers.items():
        message[safe_header("header name", name)] = safe_header(name, value)
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message
