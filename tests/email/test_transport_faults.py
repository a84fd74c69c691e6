"""What a transport says when the network fails, against real servers behind a fault-injecting proxy.

A send ends in one of three ways besides success: `DeliveryError(retryable=True)` when the message provably
did not leave and trying again may help, `DeliveryError(retryable=False)` when it was refused for good, and
`OutcomeUnknown` when the request was handed over and no answer came: then it may have left, and resending
it by itself could mail the lead twice. SES runs on a real moto server, which keeps every email it accepted;
SMTP on a real aiosmtpd server; webhooks on a real HTTP server.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import socket
import sys
import threading
import time
import urllib.request
import uuid
from email.generator import BytesGenerator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

import relance.email.transports as transports
from relance import webhooks
from relance.email.message import OutgoingEmail
from relance.email.transports import DeliveryError, OutcomeUnknown, SesTransport, make_transport
from relance.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faults import FaultProxy, http_answer  # noqa: E402  (tests/faults.py)

SENDER = "marketing@relance.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _email(to: str | None = None, **kw) -> OutgoingEmail:
    return OutgoingEmail(to=to or f"{uuid.uuid4().hex}@lead.example", from_=f"Relance <{SENDER}>", reply_to=None,
                         subject="Votre livre blanc", html="<p>Bonjour</p>", text="Bonjour\n.point en début de ligne\n",
                         outbox_id=7, **kw)


# SES on a real moto server


@pytest.fixture(scope="module")
def moto(moto_server, verify_sender):
    """The moto server, with the sender verified; its URL and port."""
    verify_sender(SENDER)
    return moto_server


def accepted(moto_url: str, to: str) -> int:
    """How many emails to `to` SES (moto) accepted: its own record, not what the client believes."""
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json") as response:
        messages = json.load(response)["ses"]["Message"]
    return sum(1 for m in messages if to in m["destinations"]["ToAddresses"])


def ses(endpoint: str, *, timeout: float = 1.0, rate: float | None = None) -> SesTransport:
    """The SES transport as `make_transport` builds it from the settings."""
    return make_transport(Settings(transport="ses", ses_endpoint_url=endpoint, ses_region="eu-west-1",
                                   ses_timeout=timeout, ses_max_send_rate=rate))


def ses_error(status: int, code: str, message: str = "canned") -> bytes:
    return http_answer(status, json.dumps({"message": message}).encode(),
                       {"x-amzn-ErrorType": code, "Content-Type": "application/json"})


THROTTLED = ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")


def test_ses_client_gets_the_configured_timeouts_and_never_retries_by_itself():
    config = ses("http://127.0.0.1:9", timeout=2.5).client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.5, 2.5)
    assert config.retries["total_max_attempts"] == 1
    assert (Settings.model_fields["ses_timeout"].default, Settings.model_fields["smtp_timeout"].default) == (10, 30)


def test_ses_answer_lost_after_ses_accepted_is_unknown_and_the_email_did_leave(moto):
    url, port = moto
    email = _email()
    with FaultProxy(("127.0.0.1", port), "lose_answer") as proxy:
        with pytest.raises(OutcomeUnknown):
            ses(proxy.url).send(email)
    assert proxy.forwarded == 1
    assert accepted(url, email.to) == 1  # it left: resending it would mail the lead twice


def test_ses_refused_connection_is_retryable_and_nothing_left(moto):
    url, port = moto
    email = _email()
    with FaultProxy(("127.0.0.1", port), "refuse") as proxy:
        with pytest.raises(DeliveryError) as refused:
            ses(proxy.url).send(email)
    assert refused.value.retryable is True and not isinstance(refused.value, OutcomeUnknown)
    assert proxy.forwarded == 0 and accepted(url, email.to) == 0


def test_ses_reset_after_the_request_was_sent_is_unknown_even_when_nothing_arrived(moto):
    """From the client's side a reset after sending looks exactly like a lost answer: it cannot say."""
    url, port = moto
    email = _email()
    with FaultProxy(("127.0.0.1", port), "reset") as proxy:
        with pytest.raises(OutcomeUnknown):
            ses(proxy.url).send(email)
    assert proxy.forwarded == 0 and accepted(url, email.to) == 0


def test_ses_hanging_endpoint_is_unknown_within_the_configured_timeout(moto):
    _, port = moto
    with FaultProxy(("127.0.0.1", port), "hang", lifetime=8) as proxy:
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown):
            ses(proxy.url, timeout=1).send(_email())
        elapsed = time.monotonic() - started
    assert elapsed < 3, f"held {elapsed:.1f} s with a 1 s timeout"


def test_ses_throttling_is_still_tried_again_through_the_pacer(moto):
    url, port = moto
    email = _email()
    unavailable = ses_error(503, "ServiceUnavailable")
    with FaultProxy(("127.0.0.1", port), [THROTTLED, unavailable, "pass"]) as proxy:
        transport = ses(proxy.url, rate=10)
        started = time.monotonic()
        assert transport.send(email)
        elapsed = time.monotonic() - started
    assert proxy.applied == [THROTTLED, unavailable, "pass"]  # three calls, one connection each
    assert elapsed >= 0.29  # three slots at 10/s: the retries were paced
    assert accepted(url, email.to) == 1


def test_ses_still_throttled_after_every_retry_is_retryable_and_nothing_left(moto):
    url, port = moto
    email = _email()
    with FaultProxy(("127.0.0.1", port), THROTTLED) as proxy:
        with pytest.raises(DeliveryError) as throttled:
            ses(proxy.url).send(email)
    assert throttled.value.retryable is True and not isinstance(throttled.value, OutcomeUnknown)
    assert len(proxy.applied) == 4 and proxy.forwarded == 0 and accepted(url, email.to) == 0


@pytest.mark.parametrize("answer, outcome", [
    (ses_error(400, "MessageRejected", "Email address is not verified."), "failed"),
    (ses_error(400, "BadRequestException"), "failed"),
    (ses_error(500, "InternalFailure"), "unknown"),  # SES failed while handling it: it may have sent it
    (ses_error(502, "BadGateway"), "unknown"),
    (ses_error(504, "GatewayTimeout"), "unknown"),
], ids=["400-MessageRejected", "400-BadRequest", "500-InternalFailure", "502", "504"])
def test_ses_error_answers_by_status(moto, answer, outcome):
    _, port = moto
    with FaultProxy(("127.0.0.1", port), answer) as proxy:
        with pytest.raises(DeliveryError) as error:
            ses(proxy.url).send(_email())
    assert _outcome(error.value) == outcome
    assert len(proxy.applied) == 1  # not retried inside the transport


def test_the_proxy_applies_one_behaviour_per_request_although_botocore_keeps_connections(moto):
    url, port = moto
    emails = [_email() for _ in range(3)]
    with FaultProxy(("127.0.0.1", port), ["pass", "lose_answer", "pass"]) as proxy:
        transport = ses(proxy.url)  # one client, one connection pool for the three sends
        assert transport.send(emails[0])
        with pytest.raises(OutcomeUnknown):
            transport.send(emails[1])
        assert transport.send(emails[2])
    assert proxy.applied == ["pass", "lose_answer", "pass"] and proxy.forwarded == 3
    assert [accepted(url, e.to) for e in emails] == [1, 1, 1]


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, OutcomeUnknown):
        return "unknown"
    if isinstance(exc, DeliveryError):
        return "retry" if exc.retryable else "failed"
    return f"raw {type(exc).__name__}"


def _classification_cases():
    import ssl

    from botocore import exceptions as e
    from botocore.parsers import ResponseParserError

    url = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    cert = e.SSLError(endpoint_url=url, error=ssl.SSLCertVerificationError(1, "certificate verify failed"))
    return [
        (e.EndpointConnectionError(endpoint_url=url), "retry"),
        (e.ConnectTimeoutError(endpoint_url=url), "retry"),
        (e.ProxyConnectionError(proxy_url="http://proxy:3128", error="refused"), "retry"),
        (cert, "retry"),  # the handshake failed: nothing was sent
        (e.SSLError(endpoint_url=url, error=ssl.SSLError(1, "bad record mac")), "unknown"),
        (e.NoCredentialsError(), "retry"),
        (e.ParamValidationError(report="Invalid type for parameter"), "failed"),
        (e.ReadTimeoutError(endpoint_url=url), "unknown"),
        (e.ConnectionClosedError(endpoint_url=url), "unknown"),
        (e.ResponseStreamingError(error="IncompleteRead"), "unknown"),
        (e.HTTPClientError(error="boom"), "unknown"),
        (ResponseParserError("garbled"), "unknown"),
    ]


@pytest.mark.parametrize("error, outcome", _classification_cases(), ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v)
def test_every_botocore_failure_is_classified(error, outcome):
    class Failing:
        def send_email(self, **_):
            raise error

    with pytest.raises(Exception) as raised:
        SesTransport(Failing()).send(_email())
    assert _outcome(raised.value) == outcome


def test_an_ses_answer_without_a_message_id_is_unknown():
    class Odd:
        def send_email(self, **_):
            return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    with pytest.raises(OutcomeUnknown):
        SesTransport(Odd()).send(_email())


# SMTP on a real aiosmtpd server


class Mailbox:
    """An aiosmtpd handler: what arrived, and how to answer (`rcpt`/`data` replies, drop or stall after DATA)."""

    def __init__(self, *, rcpt: str | None = None, data: str = "250 OK", drop_after_data: bool = False,
                 stall: float = 0.0) -> None:
        self.rcpt, self.data, self.drop_after_data, self.stall = rcpt, data, drop_after_data, stall
        self.received: list[bytes] = []
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt:
            return self.rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope.original_content)
        self.envelopes.append(envelope)
        if self.drop_after_data:
            server.transport.abort()  # the content arrived; the answer never leaves
        if self.stall:
            await asyncio.sleep(self.stall)
        return self.data


@pytest.fixture
def smtp_server():
    """Starts an aiosmtpd server on a free port for a Mailbox; yields a function(mailbox) -> port."""
    from aiosmtpd.controller import Controller

    controllers = []

    def start(mailbox: Mailbox) -> int:
        controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
        controller.start()
        controllers.append(controller)
        return controller.port

    yield start
    for controller in controllers:
        controller.stop()


def smtp(port: int, timeout: float = 1.0):
    return make_transport(Settings(transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=timeout))


def test_smtp_sends_the_bytes_of_build_mime_unchanged(smtp_server, monkeypatch):
    built = []

    def build_mime(email):
        built.append(real_build_mime(email))
        built[-1].set_boundary("fixed-for-the-comparison")  # a multipart boundary is otherwise drawn at each flattening
        return built[-1]

    real_build_mime = transports.build_mime
    monkeypatch.setattr(transports, "build_mime", build_mime)
    mailbox = Mailbox()
    email = _email()

    message_id = smtp(smtp_server(mailbox)).send(email)

    [message] = built
    expected = io.BytesIO()
    BytesGenerator(expected).flatten(copy.copy(message), linesep="\r\n")
    assert mailbox.received == [expected.getvalue()]
    assert message_id == message["Message-ID"]
    assert mailbox.envelopes[0].mail_from == SENDER and mailbox.envelopes[0].rcpt_tos == [email.to]


@pytest.mark.parametrize("mailbox, outcome, arrived", [
    (lambda: Mailbox(rcpt="451 4.3.0 Try again later"), "retry", False),
    (lambda: Mailbox(rcpt="550 5.1.1 No such user"), "failed", False),
    (lambda: Mailbox(drop_after_data=True), "unknown", True),
    (lambda: Mailbox(data="451 4.3.0 Queue full, not accepted"), "retry", True),  # refused after DATA: not taken
    (lambda: Mailbox(data="554 5.7.1 Rejected as spam"), "failed", True),
], ids=["451-at-rcpt", "550-at-rcpt", "drop-after-data", "451-after-data", "554-after-data"])
def test_smtp_failures_say_whether_the_message_was_handed_over(smtp_server, mailbox, outcome, arrived):
    box = mailbox()
    with pytest.raises(DeliveryError) as error:
        smtp(smtp_server(box)).send(_email())
    assert _outcome(error.value) == outcome
    assert bool(box.received) is arrived


def test_smtp_server_stalling_after_data_is_unknown_within_the_timeout(smtp_server):
    box = Mailbox(stall=3)
    port = smtp_server(box)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown):
        smtp(port, timeout=1).send(_email())
    assert time.monotonic() - started < 2.5
    assert len(box.received) == 1


def test_smtp_refused_connection_is_retryable(smtp_server):
    box = Mailbox()
    with FaultProxy(("127.0.0.1", smtp_server(box)), "refuse", http=False) as proxy:
        with pytest.raises(DeliveryError) as refused:
            smtp(proxy.port).send(_email())
    assert _outcome(refused.value) == "retry" and box.received == [] and proxy.forwarded == 0


def test_smtp_server_silent_before_data_is_retryable_within_the_timeout(smtp_server):
    box = Mailbox()
    with FaultProxy(("127.0.0.1", smtp_server(box)), ["pass", "hang"], http=False, lifetime=6) as proxy:
        assert smtp(proxy.port).send(_email())  # the raw pipe carries a whole dialogue
        started = time.monotonic()
        with pytest.raises(DeliveryError) as silent:
            smtp(proxy.port, timeout=1).send(_email())
        elapsed = time.monotonic() - started
    assert _outcome(silent.value) == "retry" and len(box.received) == 1
    assert elapsed < 2.5, f"held {elapsed:.1f} s with a 1 s timeout"


# webhooks: each POST carries an Idempotency-Key, so a timeout may be retried


class Receiver:
    def __init__(self) -> None:
        self.keys: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.keys.append(self.headers["Idempotency-Key"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


def _post(url: str) -> None:
    with httpx.Client() as client:  # the receiver and the proxy run on this machine: allowed by name
        webhooks.post(client, url, {"event": "relance.notify"}, secret="s", outbox_id=12, allow="127.0.0.1")


@pytest.mark.parametrize("url", ["http://[::1", "ftp://crm.example/hook", "crm.example/hook", "http://\x00crm/"])
def test_a_malformed_webhook_url_is_failed_and_named(url):
    with pytest.raises(DeliveryError) as error:
        _post(url)
    assert error.value.retryable is False and repr(url)[1:-1] in str(error.value)


def test_webhook_lost_answer_and_timeout_stay_retryable_the_receiver_deduplicates(receiver, monkeypatch):
    monkeypatch.setattr(webhooks, "TIMEOUT_S", 0.5)
    upstream = ("127.0.0.1", receiver.server.server_port)
    with FaultProxy(upstream, ["lose_answer", "hang", "pass"]) as proxy:
        for _ in range(2):
            with pytest.raises(DeliveryError) as error:
                _post(f"{proxy.url}/hooks/lead")
            assert _outcome(error.value) == "retry"
        _post(f"{proxy.url}/hooks/lead")
    assert receiver.keys == ["relance-outbox-12", "relance-outbox-12"]  # the same key: the receiver drops the repeat
