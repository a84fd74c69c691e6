"""The header lines as they leave, read on the raw bytes (never through a parser that would decode them):
the .eml the file transport writes, what a real aiosmtpd server receives, and the request botocore sends
to a real moto server (and what moto kept).

`List-Unsubscribe: <https://...>` must be the URL itself on the header line: a mail provider does not
decode an RFC 2047 encoded-word there, and without it no one-click unsubscribe (RFC 2369, RFC 8058).
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import boto3
import pytest

from relance.email.message import OutgoingEmail
from relance.email.tracking import unsubscribe_headers, unsubscribe_url
from relance.email.transports import SesTransport, make_transport
from relance.settings import Settings

SENDER = "marketing@relance.example"
ISSUE_SUBJECT = "Offre fidélité pour Société Générale d'Équipement : -20 % à Genève"
UNSUBSCRIBE = unsubscribe_url(public_url="https://track.example.com", secret="k" * 32, outbox_id=184211, lead_id=99812,
                              email="lea.martin@acme-industries.example")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lead_email(**kw) -> OutgoingEmail:
    base = dict(to="Léa Martin <lea.martin@acme-industries.example>", from_=f"Équipe Relance <{SENDER}>",
                reply_to="ventes@relance.example", subject=ISSUE_SUBJECT, html="<p>Bonjour Léa</p>", text="Bonjour Léa\n",
                headers=unsubscribe_headers(UNSUBSCRIBE), outbox_id=184211)
    return OutgoingEmail(**{**base, **kw})


def header_section(raw: bytes) -> bytes:
    """The header lines of a message (up to the first empty line), as they are."""
    end = re.search(rb"\r?\n\r?\n", raw)
    assert end, "no end of the header section"
    return raw[:end.start()]


def raw_header(raw: bytes, name: str) -> bytes:
    """The one field `name` as written: its first line and its folded continuation lines, line ends kept."""
    found = re.findall(rb"(?mi)^" + re.escape(name.encode()) + rb":[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", header_section(raw))
    assert len(found) == 1, f"{len(found)} {name} fields in\n{header_section(raw).decode('utf-8', 'replace')}"
    return found[0]


def unfolded_value(raw: bytes, name: str) -> str:
    """The field's value unfolded (RFC 5322 2.2.3: a line end before a space or tab is removed), the one space
    after the colon left out."""
    field = re.sub(rb"\r?\n(?=[ \t])", b"", raw_header(raw, name)).decode("ascii")
    return field[len(name) + 1:].removeprefix(" ")


def assert_one_click_unsubscribe(raw: bytes, url: str = UNSUBSCRIBE) -> None:
    line = raw_header(raw, "List-Unsubscribe")
    assert line == f"List-Unsubscribe: <{url}>".encode(), line  # the URL itself, on one line
    assert b"=?" not in line
    assert raw_header(raw, "List-Unsubscribe-Post") == b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"


def assert_date_with_its_offset(raw: bytes) -> None:
    value = unfolded_value(raw, "Date")
    offset = value.rsplit(" ", 1)[-1]
    assert re.fullmatch(r"[+-]\d{4}", offset) and offset != "-0000", value  # -0000 says "offset unknown" (RFC 5322 3.3)
    assert offset == datetime.now().astimezone().strftime("%z"), f"{value}: not the machine's offset"
    assert abs(parsedate_to_datetime(value) - datetime.now(timezone.utc)) < timedelta(minutes=2), value


def assert_message_id_on(raw: bytes, domain: str) -> str:
    value = unfolded_value(raw, "Message-ID")
    assert re.fullmatch(r"<[^<>@\s]+@" + re.escape(domain) + ">", value), value
    return value


def assert_header_lines_fit(raw: bytes) -> None:
    """Header lines: ASCII, at most 998 characters (RFC 5322 2.1.1), 78 but for a URL on its own."""
    for line in header_section(raw).splitlines():
        assert line.isascii() and len(line) <= 998, line
        assert len(line) <= 78 or line.startswith(b"List-Unsubscribe: <"), line


# the file transport


def test_the_eml_file_carries_the_unsubscribe_url_raw_a_real_date_and_the_senders_domain(tmp_path):
    transport = make_transport(Settings(transport="file", outbox_dir=tmp_path))

    message_id = transport.send(lead_email())

    raw = (tmp_path / "184211.eml").read_bytes()
    assert_one_click_unsubscribe(raw)
    assert_date_with_its_offset(raw)
    assert assert_message_id_on(raw, "relance.example") == message_id
    assert_header_lines_fit(raw)


def test_relance_message_id_domain_names_the_message_id_domain(tmp_path, monkeypatch):
    monkeypatch.setenv("RELANCE_MESSAGE_ID_DOMAIN", "mail.relance-notifications.example")
    transport = make_transport(Settings(transport="file", outbox_dir=tmp_path))

    transport.send(lead_email())

    assert_message_id_on((tmp_path / "184211.eml").read_bytes(), "mail.relance-notifications.example")


def test_every_list_header_of_urls_stays_raw_even_two_urls_and_a_very_long_one(tmp_path):
    long_url = "https://track.example.com/u/" + "A" * 600
    headers = {"List-Unsubscribe": f"<mailto:unsubscribe@relance.example?subject=stop>, <{UNSUBSCRIBE}>",
               "List-Help": f"<{long_url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    make_transport(Settings(transport="file", outbox_dir=tmp_path)).send(lead_email(headers=headers))

    raw = (tmp_path / "184211.eml").read_bytes()
    assert b"=?" not in raw_header(raw, "List-Unsubscribe") + raw_header(raw, "List-Help")
    assert unfolded_value(raw, "List-Unsubscribe") == headers["List-Unsubscribe"]
    assert raw_header(raw, "List-Help") == f"List-Help: <{long_url}>".encode()  # 640 characters, one line: allowed


# SMTP: what a real aiosmtpd server receives


class Inbox:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.contents.append(envelope.content)
        return "250 OK"


@pytest.fixture(scope="module")
def smtp_inbox():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


def test_smtp_hands_over_the_unsubscribe_url_raw_a_real_date_and_the_senders_domain(smtp_inbox):
    inbox, port = smtp_inbox
    transport = make_transport(Settings(transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5))

    message_id = transport.send(lead_email())

    raw = inbox.contents[-1]
    assert_one_click_unsubscribe(raw)
    assert_date_with_its_offset(raw)
    assert assert_message_id_on(raw, "relance.example") == message_id
    assert_header_lines_fit(raw)


def test_smtp_message_id_domain_from_the_setting(smtp_inbox):
    inbox, port = smtp_inbox
    transport = make_transport(Settings(transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5,
                                        message_id_domain="mail.relance-notifications.example"))
    transport.send(lead_email())
    assert_message_id_on(inbox.contents[-1], "mail.relance-notifications.example")


def test_the_eml_and_the_smtp_content_carry_the_same_header_lines(smtp_inbox, tmp_path):
    """The same builder and the same flattening: the .eml is what an SMTP server would have received
    (with LF line ends), but for the Date, the Message-ID and the multipart boundary, drawn at each send."""
    inbox, port = smtp_inbox
    email = lead_email()
    make_transport(Settings(transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5)).send(email)
    make_transport(Settings(transport="file", outbox_dir=tmp_path)).send(email)

    def comparable(raw: bytes) -> bytes:
        raw = raw.replace(b"\r\n", b"\n")
        raw = re.sub(rb"(?m)^(Date|Message-ID): .*$", rb"\1: -", raw)
        return re.sub(rb"===============\d+==", b"BOUNDARY", raw)

    assert comparable((tmp_path / "184211.eml").read_bytes()) == comparable(inbox.contents[-1])


# SES: the request botocore sends to a real moto server, and what moto kept


@pytest.fixture(scope="module")
def moto_url(moto_server, verify_sender):
    """The process's moto server, with the sender verified."""
    verify_sender(SENDER)
    return moto_server[0]


class Wire:
    """The bodies of the SendEmail requests botocore is about to send (a `before-send` hook: the bytes that
    go on the wire, after serialization)."""

    def __init__(self, client) -> None:
        self.bodies: list[bytes] = []
        client.meta.events.register("before-send.sesv2.SendEmail", self._capture)

    def _capture(self, request, **_):
        body = request.body
        self.bodies.append(body if isinstance(body, bytes) else body.encode())


def ses_client(url: str):
    return boto3.client("sesv2", region_name="eu-west-1", endpoint_url=url)


def moto_message(url: str, message_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/moto-api/data.json") as response:
        messages = json.load(response)["ses"]["Message"]
    [found] = [m for m in messages if m["id"] == message_id]
    return found


def test_ses_receives_the_unsubscribe_url_raw_in_headers_and_a_7bit_subject(moto_url):
    client = ses_client(moto_url)
    wire = Wire(client)

    message_id = SesTransport(client).send(lead_email())

    [body] = wire.bodies
    assert f'{{"Name": "List-Unsubscribe", "Value": "<{UNSUBSCRIBE}>"}}'.encode() in body  # as botocore serialized it
    request = json.loads(body)
    simple = request["Content"]["Simple"]
    headers = {h["Name"]: h["Value"] for h in simple["Headers"]}
    assert headers == {"List-Unsubscribe": f"<{UNSUBSCRIBE}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    for value in headers.values():  # the sesv2 model: printable ASCII, at most 995 characters
        assert re.fullmatch(r"[ -~]{1,995}", value) and "=?" not in value
    # the sesv2 model: the Subject is 7-bit ASCII, RFC 2047 encoded-words for anything else
    assert re.fullmatch(r"[ -~]+", simple["Subject"]["Data"]) and "=?utf-8?" in simple["Subject"]["Data"]
    assert "Charset" not in simple["Subject"]  # a Charset would have SES encode the encoded-words again
    assert request["FromEmailAddress"].isascii() and request["FromEmailAddress"].endswith(f" <{SENDER}>")
    assert all(a.isascii() for a in request["Destination"]["ToAddresses"] + request["ReplyToAddresses"])
    # SES writes Date and Message-ID itself: relance hands over neither
    assert not {"date", "message-id"} & {name.lower() for name in headers}
    kept = moto_message(moto_url, message_id)
    assert kept["subject"] == simple["Subject"]["Data"] and kept["source"] == request["FromEmailAddress"]


def test_ses_keeps_an_ascii_subject_and_sender_as_they_are(moto_url):
    client = ses_client(moto_url)
    wire = Wire(client)

    message_id = SesTransport(client).send(lead_email(subject="Votre livre blanc", from_=f"Relance <{SENDER}>"))

    simple = json.loads(wire.bodies[0])["Content"]["Simple"]
    assert simple["Subject"] == {"Data": "Votre livre blanc"}
    assert moto_message(moto_url, message_id)["source"] == f"Relance <{SENDER}>"
