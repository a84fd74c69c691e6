"""Subjects and display names arrive exactly as written: a property over about two thousand generated ones
(accents, typographic quotes, dashes, emoji, very long words, leading, trailing and double spaces, things
that look like encoded-words), through the bytes each transport actually hands over, read back by other
parsers than the one that wrote them:

- `email.parser.BytesParser(policy=compat32)` with `email.header.decode_header`/`make_header`
  (and `email.utils.parseaddr` for the display names), the legacy API;
- a strict RFC 2047 decoder written here, which also checks what RFC 2047 asks of the writer (at most 75
  characters per encoded-word, each a whole number of UTF-8 characters, Q text safe in a phrase, no
  encoded-word glued to other text);
- `email.parser.BytesParser(policy=default)`, the modern API a receiving Python program uses.

The bytes: `build_mime` flattened (what the file transport writes), what a real aiosmtpd server receives,
and the request botocore sends to a real moto server (SES builds the MIME from it) and what moto kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.policy import compat32, default
from email.utils import parseaddr

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relance.email.message import OutgoingEmail, build_mime
from relance.email.transports import SesTransport, make_transport
from relance.settings import Settings

from test_raw_headers import (ISSUE_SUBJECT, SENDER, UNSUBSCRIBE, Wire, assert_header_lines_fit,  # noqa: F401 (fixtures)
                              assert_one_click_unsubscribe, moto_message, moto_url, raw_header, ses_client, smtp_inbox)

LEAD = "lea.martin@acme-industries.example"
NOTABLE = ["é", "É", "è", "ê", "à", "ç", "Ç", "œ", "Œ", "æ", "ß", "ø", "Å", "ñ", "ü", "ÿ", "ı", "İ",
           "«", "»", "“", "”", "„", "‘", "’", "‹", "›", "—", "–", "‑", "…", "€", "£", "©", "™", "°", "½",
           "\u00a0", "\u202f", "\u2009", "\u200b", "\u200d", "\ufeff", "\u00ad", "e\u0301", "🙂", "🚀", "👩‍💻",
           "🇫🇷", "👍🏽", "中文", "日本語", "한국어", "Ж", "Привет", "مرحبا", "שלום", "Ελλάδα", "ไทย", "𝔘𝔫𝔦",
           "=?", "?=", "=?utf-8?q?x?=", "=?UTF-8?B?w6k=?=", "_", "=", "?", "=3D", '"', "\\", "(", ")", "<", ">",
           ",", ";", ":", "@", ".", "'", "%", "!", "#", "[", "]", "&", "*", "/", "-", "+", "~", "|", "{", "}"]
SEPARATORS = [" ", " ", " ", "  ", "   ", ""]
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ACCENTED = "éèêëàâäîïôöùûüÿçœæÉÈÊÀÂÎÔÙÛÇŒÆñÑãõåøßłŁźżśćęąčřšžýáíóúőű"
# any printable character of any script (no controls, no line or paragraph separators, no surrogates)
ANY = st.characters(min_codepoint=0xA0, max_codepoint=0x1FAFF, categories=("L", "M", "N", "P", "S", "Zs", "Cf", "Co"))
WORDS = st.one_of(
    st.sampled_from(NOTABLE),
    st.text(st.sampled_from(LETTERS), min_size=1, max_size=10),
    st.text(st.sampled_from(LETTERS + ACCENTED + "’«»—–…€🙂"), min_size=1, max_size=12),
    st.text(ANY, min_size=1, max_size=6),
    st.builds(lambda part, size: (part * size)[:size],  # very long words, too long for a line
              st.text(st.sampled_from(LETTERS + ACCENTED + "—’🙂"), min_size=1, max_size=6), st.integers(70, 220)),
)


@st.composite
def phrases(draw, max_words: int = 10) -> str:
    words = draw(st.lists(WORDS, max_size=max_words))
    text = "".join(word + draw(st.sampled_from(SEPARATORS)) for word in words)
    return draw(st.sampled_from(["", " ", "  "])) + text + draw(st.sampled_from(["", " ", "  "]))


def quoted(name: str, address: str) -> str:
    """`"name" <address>`, the form relance is given a display name in (RFC 5322 quoted-string)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'


# the decoders


def unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")


def strict_decode(value: str) -> str:
    """RFC 2047 6.2 on an unfolded value: whitespace between two encoded-words is dropped, every other
    character kept. Fails on an encoded-word RFC 2047 forbids: over 75 characters, not UTF-8 on its own
    (a character cut in two), a Q word with characters a phrase may not hold, bad base64."""
    out: list[str] = []
    previous_encoded = False
    for piece in re.split(r"([ \t]+)", value):
        match = _WORD.fullmatch(piece)
        if piece and not match and "=?" in piece:
            assert not _WORD.search(piece), f"an encoded-word glued to other text: {piece!r}"
        if match:
            assert len(piece) <= 75, f"encoded-word of {len(piece)} characters: {piece}"
            charset, kind, text = match.groups()
            assert charset.lower() == "utf-8", piece
            if kind in "Qq":
                assert re.fullmatch(r"(?:[A-Za-z0-9!*+\-/_]|=[0-9A-F]{2})*", text), f"Q text not safe in a phrase: {piece}"
                data = re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), text.replace("_", " ").encode())
            else:
                try:
                    data = base64.b64decode(text, validate=True)
                except binascii.Error as exc:
                    raise AssertionError(f"bad base64 in {piece}") from exc
            decoded = data.decode("utf-8")  # strict: each word a whole number of characters
            if previous_encoded and out and out[-1].isspace():
                out.pop()
            out.append(decoded)
            previous_encoded = True
        else:
            out.append(piece)
            if piece and not piece.isspace():
                previous_encoded = False
    return "".join(out)


def legacy_decode(value: str) -> str:
    return str(make_header(decode_header(unfold(value))))


def parsed(raw: bytes):
    """The header section of the raw message read by each parser (once: parsing is most of the time here)."""
    return (BytesParser(policy=compat32).parsebytes(raw, headersonly=True),
            BytesParser(policy=default).parsebytes(raw, headersonly=True))


def subject_readings(raw: bytes, messages=None) -> dict[str, str]:
    """The Subject as each decoder reads it from the raw message."""
    legacy, modern = messages or parsed(raw)
    return {"compat32 + decode_header": legacy_decode(legacy["Subject"]),
            "strict RFC 2047": strict_decode(unfold(legacy["Subject"])),
            "policy.default": str(modern["Subject"])}


def name_readings(messages, header: str, name: str) -> dict[str, tuple[tuple[str, str], str]]:
    """(display name, address) of an address header as each decoder reads it from the raw message, with the
    display name each should read.

    policy.default is held to less in a display name, for two faults of its own: it reads a run of
    whitespace inside an encoded-word that starts with a space or tab as one space (as if it were a phrase's
    folding whitespace, RFC 5322 3.2.5, though it is encoded text), and it puts a space between two adjacent
    encoded-words (CPython issue #128110, against RFC 2047 6.2, which every other decoder here follows): it
    is checked on names that fit one encoded-word, such runs compared as one space."""
    legacy = unfold(messages[0][header])
    phrase, address = parseaddr(legacy)
    [modern] = messages[1][header].addresses
    readings = {"compat32 + parseaddr + decode_header": ((legacy_decode(phrase), address), name),
                "strict RFC 2047": ((strict_decode(phrase) if "=?" in legacy else phrase, address), name)}
    words = len(_WORD.findall(phrase))
    if words <= 1:
        readings["policy.default"] = ((modern.display_name, modern.addr_spec), re.sub(r"[ \t]\s*", " ", name) if words else name)
    return readings


def assert_read_back(raw: bytes, subject: str, sender: str, lead: str) -> None:
    assert_header_lines_fit(raw)
    messages = parsed(raw)
    for reader, read in subject_readings(raw, messages).items():
        assert read == subject, f"{reader} read the Subject {read!r}, not {subject!r}\n{raw_header(raw, 'Subject').decode()}"
    for header, name, address in (("From", sender, SENDER), ("To", lead, LEAD)):
        for reader, (read, expected) in name_readings(messages, header, name).items():
            assert read == (expected, address), f"{reader} read {header} {read!r}, not {(expected, address)!r}\n{raw_header(raw, header).decode()}"


def email_with(subject: str, sender: str, lead: str) -> OutgoingEmail:
    return OutgoingEmail(to=quoted(lead, LEAD), from_=quoted(sender, SENDER), reply_to=None, subject=subject,
                         html="<p>Bonjour</p>", text="Bonjour\n", headers={"List-Unsubscribe": f"<{UNSUBSCRIBE}>",
                                                                           "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
                         outbox_id=184211)


PROPERTY = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# the bytes build_mime gives the file and SMTP transports


@settings(max_examples=1600, **PROPERTY)
@given(subject=phrases(), sender=phrases(max_words=6), lead=phrases(max_words=6))
@example(subject=ISSUE_SUBJECT, sender="Équipe Relance", lead="Léa Martin")
@example(subject="Réunion — « Spécial » : 20 % 🙂 ", sender=" Société Générale d'Équipement, SA ", lead="O'Neil  Zoë")
@example(subject="=?utf-8?q?pas_un_mot_encod=C3=A9?=", sender="Relance", lead="Dr. No")
@example(subject="a" * 200, sender="x" * 90, lead="")
def test_subjects_and_names_survive_the_mime_bytes(subject, sender, lead):
    raw = build_mime(email_with(subject, sender, lead)).as_bytes()
    assert_read_back(raw, subject, sender, lead)
    assert_one_click_unsubscribe(raw)


def test_the_issue_subject_arrives_whole_through_the_file_transport(tmp_path):
    make_transport(Settings(transport="file", outbox_dir=tmp_path)).send(email_with(ISSUE_SUBJECT, "Équipe Relance", "Léa Martin"))
    raw = (tmp_path / "184211.eml").read_bytes()
    assert subject_readings(raw) == dict.fromkeys(("compat32 + decode_header", "strict RFC 2047", "policy.default"), ISSUE_SUBJECT)


# what a real SMTP server receives


@settings(max_examples=150, **PROPERTY)
@given(subject=phrases(), sender=phrases(max_words=6), lead=phrases(max_words=6))
@example(subject=ISSUE_SUBJECT, sender="Équipe Relance", lead="Léa Martin")
def test_subjects_and_names_survive_what_an_smtp_server_receives(smtp_inbox, subject, sender, lead):
    inbox, port = smtp_inbox
    make_transport(Settings(transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5)).send(
        email_with(subject, sender, lead))
    assert_read_back(inbox.contents[-1], subject, sender, lead)


# what botocore sends SES (a real moto server), and what moto kept


@pytest.fixture(scope="module")
def ses_wire(moto_url):
    client = ses_client(moto_url)
    return SesTransport(client), Wire(client), moto_url


@settings(max_examples=150, **PROPERTY)
@given(subject=phrases(), sender=phrases(max_words=6), lead=phrases(max_words=6))
@example(subject=ISSUE_SUBJECT, sender="Équipe Relance", lead="Léa Martin")
def test_subjects_and_names_survive_what_botocore_sends_ses(ses_wire, subject, sender, lead):
    transport, wire, url = ses_wire
    message_id = transport.send(email_with(subject, sender, lead))
    request = json.loads(wire.bodies[-1])
    sent_subject = request["Content"]["Simple"]["Subject"]["Data"]
    assert re.fullmatch(r"[ -~]*", sent_subject), sent_subject  # the sesv2 model: 7-bit, RFC 2047 for the rest
    for reader, read in {"decode_header": legacy_decode(sent_subject), "strict RFC 2047": strict_decode(sent_subject)}.items():
        assert read == subject, f"{reader} read {read!r} from {sent_subject!r}"
    [to] = request["Destination"]["ToAddresses"]
    for sent, name, address in ((request["FromEmailAddress"], sender, SENDER), (to, lead, LEAD)):
        assert re.fullmatch(r"[ -~]*", sent), sent
        phrase, addr = parseaddr(sent)
        assert (legacy_decode(phrase), addr) == (name, address), sent
        assert (strict_decode(phrase) if "=?" in sent else phrase) == name, sent
    kept = moto_message(url, message_id)
    assert (kept["subject"], kept["source"]) == (sent_subject, request["FromEmailAddress"])
