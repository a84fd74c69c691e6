"""An email ready to leave, and its MIME form (for the file and SMTP transports).

relance writes the top-level header lines itself rather than let the email package fold them: CPython's
folder (3.11) writes a long `List-Unsubscribe: <URL>` as RFC 2047 encoded-words, which mail providers do
not read as a one-click unsubscribe, and loses the space between two encoded-words of a Subject. Here:

- URLs in angle brackets (RFC 2369 `List-*` headers) and other printable ASCII values go as they are,
  folded only at a space that is already there (a lone `<URL>` stays on one line: RFC 5322 allows 998);
- a Subject or display name that cannot go as it is (non-ASCII, a double, leading or trailing space,
  something a reader would take for an encoded-word, a word too long for a line) is written whole as
  UTF-8 encoded-words: at most 75 characters each, each a whole number of characters, the spaces encoded
  inside them, so any RFC 2047 decoder gives the text back exactly;
- `Date` carries the real offset and `Message-ID` the sender's domain (or RELANCE_MESSAGE_ID_DOMAIN).

The same encoding, on one line, is what the SES transport hands over (`header_value`).
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from string import ascii_letters, digits


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


def sender_name(from_: str) -> str:
    """The display name of a From setting (`Relance <news@x>` -> `Relance`), or the address itself."""
    return from_.split("<")[0].strip().strip('"') or from_


def safe_header(name: str, value: str) -> str:
    """Refuse CR/LF in a header value: lead data must never add headers."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break: {value!r}")
    return value


LINE = 78  # RFC 5322 2.1.1: a line SHOULD be at most 78 characters...
MAX_LINE = 998  # ...and MUST be at most 998
WORD = 75  # RFC 2047 2: an encoded-word is at most 75 characters
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})
_HEADER_NAME = re.compile(r"[!-9;-~]{1,126}")  # RFC 5322 ftext: printable ASCII but the colon (SES: at most 126)
_Q_SAFE = frozenset((ascii_letters + digits + "!*+-/").encode())  # RFC 2047 5(3): Q text safe even in a phrase
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+( [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")  # RFC 5322 atoms, one space apart
_URL_LIST = re.compile(r"<[!-;=?-~]*>( ?, ?<[!-;=?-~]*>)*")  # RFC 2369: <URL>, <URL> (printable ASCII, no spaces)
_ID_RIGHT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*|\[[!-Z^-~]*\]")  # RFC 5322 3.6.4
_FOLD_POINT = re.compile(r"(?<=\S) (?=\S)")  # a single space between two words: folding there loses nothing


def encoded_words(text: str, *, first: int = WORD) -> list[str]:
    """`text` as UTF-8 encoded-words (Q or B, whichever is shorter), each at most 75 characters (the first
    at most `first`) and each a whole number of characters; every character, spaces included, is inside a
    word, so the whitespace a decoder drops between two words is never part of the text."""
    data = text.encode()
    q_length = sum(1 if byte in _Q_SAFE or byte == 0x20 else 3 for byte in data)
    kind = "q" if q_length <= 4 * -(-len(data) // 3) else "b"
    encode = _q_encode if kind == "q" else (lambda chunk: base64.b64encode(chunk).decode("ascii"))
    overhead = len(f"=?utf-8?{kind}??=")
    words: list[str] = []
    chunk, room = b"", max(first, overhead + 12)  # 12: a 4-byte character in Q
    for char in text:
        grown = chunk + char.encode()
        if chunk and overhead + len(encode(grown)) > room:
            words.append(f"=?utf-8?{kind}?{encode(chunk)}?=")
            grown, room = char.encode(), WORD
        chunk = grown
    if chunk:
        words.append(f"=?utf-8?{kind}?{encode(chunk)}?=")
    return words


def _q_encode(data: bytes) -> str:
    return "".join("_" if byte == 0x20 else chr(byte) if byte in _Q_SAFE else f"={byte:02X}" for byte in data)


def _plain_text(value: str) -> bool:
    """Whether unstructured text may go as it is: printable ASCII, words one space apart, no `=?`."""
    return value.isascii() and value.isprintable() and value.strip(" ") == value and "  " not in value and "=?" not in value


def _lay_out(name: str, tokens: list[str], width: int) -> list[str]:
    """The header's lines: tokens one space apart, a line folded (at that space) before a token that would
    take it past `width`; a token is never cut."""
    lines = [f"{name}:"]
    for number, token in enumerate(tokens):
        if number and len(lines[-1]) + 1 + len(token) > width:
            lines.append(" " + token)
        else:
            lines[-1] += " " + token
    if not tokens:
        lines[0] += " "
    return lines


def _ascii_address(name: str, address: str) -> str:
    """The addr-spec with its domain in Punycode (RFC 5890); a non-ASCII local part stays (SMTPUTF8 only)."""
    local, at, domain = address.rpartition("@")
    if at and not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"header {name}: domain {domain!r} is not a valid internationalized name") from exc
        return f"{local}@{domain}"
    return address


def _address_tokens(name: str, value: str) -> list[str]:
    pairs = getaddresses([value])
    if not pairs or not all(address for _, address in pairs):
        raise ValueError(f"header {name} is not an address: {value!r}")
    tokens: list[str] = []
    for number, (display, address) in enumerate(pairs):
        address = _ascii_address(name, address)
        if not display:
            part = [address]
        elif _ATOMS.fullmatch(display) and "=?" not in display and max(map(len, display.split(" "))) <= 60:
            part = [*display.split(" "), f"<{address}>"]
        elif display.isascii() and display.isprintable() and "=?" not in display and len(display) <= 58:
            quoted = display.replace("\\", "\\\\").replace('"', '\\"')
            part = [f'"{quoted}"', f"<{address}>"]
        else:
            first = LINE - len(name) - 2 if not tokens else WORD
            part = [*encoded_words(display, first=first), f"<{address}>"]
        if number < len(pairs) - 1:
            part[-1] += ","
        tokens += part
    return tokens


def header_lines(name: str, value: str) -> list[str]:
    """The lines (without line ends) relance writes for a header; see the module's docstring."""
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"header name {name!r} is not printable ASCII without a colon")
    safe_header(name, value)
    if name.lower() in ADDRESS_HEADERS:
        lines = _lay_out(name, _address_tokens(name, value), LINE)
    elif _URL_LIST.fullmatch(value):
        lines = _lay_out(name, _FOLD_POINT.split(value), MAX_LINE)
    elif name.lower() != "subject" and value.isascii() and value.isprintable():
        lines = _lay_out(name, _FOLD_POINT.split(value), LINE)
    else:
        lines = _lay_out(name, value.split(" "), LINE) if _plain_text(value) else []
        if not lines or max(map(len, lines)) > LINE:
            lines = _lay_out(name, encoded_words(value, first=LINE - len(name) - 2), LINE)
    if max(map(len, lines)) > MAX_LINE:
        raise ValueError(f"header {name} has a word too long for a line ({MAX_LINE} characters): {value[:80]!r}...")
    return lines


def header_value(name: str, value: str) -> str:
    """The header's value as relance writes it, on one line (what the SES transport hands over)."""
    lines = header_lines(name, value)
    return "".join(lines)[len(name) + 2:]


class WrittenHeader(str):
    """A header value as relance wrote it (its str: the value on one line). The email package writes these
    lines out unchanged: EmailPolicy folds a value with a `name` by calling its `fold`."""

    name: str
    lines: tuple[str, ...]

    @classmethod
    def of(cls, name: str, value: str) -> "WrittenHeader":
        lines = header_lines(name, value)
        written = cls("".join(lines)[len(name) + 2:])
        written.name, written.lines = name, tuple(lines)
        return written

    def fold(self, *, policy) -> str:
        return policy.linesep.join(self.lines) + policy.linesep


def id_domain(email: OutgoingEmail, domain: str | None = None) -> str:
    """`domain` (RELANCE_MESSAGE_ID_DOMAIN) or the sender's, in Punycode; a dot-atom or a [literal]."""
    if not domain:
        addresses = [address for _, address in getaddresses([email.from_]) if "@" in address]
        domain = addresses[0].rpartition("@")[2] if addresses else "localhost"
    domain = domain.strip().lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"Message-ID domain {domain!r} is not a valid internationalized name") from exc
    if not _ID_RIGHT.fullmatch(domain):
        raise ValueError(f"Message-ID domain {domain!r} is not a domain name")
    return domain


def build_mime(email: OutgoingEmail, *, message_id_domain: str | None = None, now: datetime | None = None) -> EmailMessage:
    """multipart/alternative: text first, then HTML; Date (with its offset) and Message-ID (on the sender's
    domain unless `message_id_domain` says otherwise) set. Header lines as the module's docstring says."""
    message = EmailMessage()

    def put(name: str, value: str) -> None:
        message[name] = WrittenHeader.of(name, value)

    put("From", email.from_)
    put("To", email.to)
    if email.reply_to:
        put("Reply-To", email.reply_to)
    put("Subject", email.subject)
    now = now or datetime.now(timezone.utc).astimezone()  # the local time with its real offset (never -0000)
    put("Date", format_datetime(now if now.tzinfo else now.astimezone()))
    put("Message-ID", make_msgid(idstring=str(email.outbox_id) if email.outbox_id else None,
                                 domain=id_domain(email, message_id_domain)))
    for name, value in email.headers.items():
        put(safe_header("header name", name), value)
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


def mime_bytes(message: EmailMessage) -> bytes:
    """The message flattened as smtplib's send_message flattens it (UTF-8 headers only when an address needs
    them, SMTPUTF8), with the email package's own line ends (LF) as `as_bytes` gives."""
    international = not all(str(value).isascii() for value in message.values())
    policy = message.policy.clone(utf8=True) if international else message.policy
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(message)
    return buffer.getvalue()
