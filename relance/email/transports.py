"""How emails leave: file (default), SMTP, Amazon SES (sesv2), or nowhere (benchmarks, simulations)."""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import uuid
from pathlib import Path
from typing import Protocol

from relance.email.message import OutgoingEmail, build_mime, header_value, mime_bytes, safe_header
from relance.email.pacing import Pacer


class DeliveryError(Exception):
    """The transport refused or failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class OutcomeUnknown(DeliveryError):
    """The message was handed over but no answer came back (a timeout or a reset after the request
    was sent): it may have left. Never retried by itself; the outbox row becomes `unknown`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class Transport(Protocol):
    def send(self, email: OutgoingEmail) -> str:
        """Deliver one email; returns the provider's message id."""
        ...


class FileTransport:
    """Writes each email as `<outbox id>.eml` in a folder (atomically: temp file, then rename)."""

    def __init__(self, directory: Path, *, message_id_domain: str | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._mime = {"message_id_domain": message_id_domain} if message_id_domain else {}

    def send(self, email: OutgoingEmail) -> str:
        message = build_mime(email, **self._mime)
        name = str(email.outbox_id) if email.outbox_id is not None else uuid.uuid4().hex
        target = self.directory / f"{name}.eml"
        temporary = self.directory / f".{name}.eml.tmp"
        temporary.write_bytes(mime_bytes(message))  # what smtplib sends, with LF line ends
        os.replace(temporary, target)
        return str(message["Message-ID"])


class SmtpTransport:
    """Plain SMTP, one connection per email, the dialogue in steps so that a failure tells whether the
    message had been handed over.

    Before the server accepted DATA (connect, EHLO, MAIL FROM, RCPT TO, DATA), nothing was handed over: a
    4xx reply, a refused or dropped connection, a timeout may be retried; a 5xx reply (or every recipient
    refused with 5xx) is for good. Once the content is being sent, a reply still proves what happened to it
    (RFC 5321: only 250 means the server took it; 4xx and 5xx mean it did not), but a disconnect or a
    timeout leaves it unknown: the server may have queued it."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, message_id_domain: str | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._mime = {"message_id_domain": message_id_domain} if message_id_domain else {}

    def send(self, email: OutgoingEmail) -> str:
        message = build_mime(email, **self._mime)
        where = f"SMTP {self.host}:{self.port}"
        smtp = _SteppedSMTP(timeout=self.timeout)
        try:
            code, reply = smtp.connect(self.host, self.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, reply)
            smtp.ehlo_or_helo_if_needed()
            smtp.send_message(message)  # smtplib flattens the message (the bytes sent); _SteppedSMTP.sendmail sends them
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            refusals = ", ".join(f"{to}: {code} {_text(reply)}" for to, (code, reply) in exc.recipients.items())
            raise DeliveryError(f"{where} refused the recipient ({refusals})",
                                retryable=any(not 500 <= code < 600 for code in codes)) from exc
        except smtplib.SMTPResponseException as exc:  # a reply code at connect, EHLO, MAIL, DATA or after the content
            told = f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}"
            if 500 <= exc.smtp_code < 600:
                raise DeliveryError(told, retryable=False) from exc
            if 400 <= exc.smtp_code < 500 or not smtp.handed_over:
                raise DeliveryError(told, retryable=True) from exc
            raise OutcomeUnknown(f"{told} after the content was sent: it may have been taken") from exc
        except smtplib.SMTPNotSupportedError as exc:  # e.g. a non-ASCII address and no SMTPUTF8
            raise DeliveryError(f"{where}: {exc}", retryable=False) from exc
        except OSError as exc:  # refused, reset, closed (SMTPServerDisconnected), timed out (smtplib's errors are OSErrors)
            if smtp.handed_over:
                raise OutcomeUnknown(f"{where}: {_describe(exc)} after the content was sent: it may have been taken") from exc
            raise DeliveryError(f"{where}: {_describe(exc)} before the message was handed over", retryable=True) from exc
        finally:
            _quit(smtp)
        return str(message["Message-ID"])


class _SteppedSMTP(smtplib.SMTP):
    """smtplib's send_message (the same bytes), with sendmail's steps done here so that `handed_over` tells
    whether the server accepted DATA and the content started to go."""

    handed_over = False

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        self.ehlo_or_helo_if_needed()
        to_addrs = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        options = []
        if self.does_esmtp:
            if self.has_extn("size"):
                options.append(f"size={len(msg)}")
            options.extend(mail_options)
        code, reply = self.mail(from_addr, options)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, from_addr)
        refused = {}
        for each in to_addrs:
            code, reply = self.rcpt(each, rcpt_options)
            if code not in (250, 251):
                refused[each] = (code, reply)
            if code == 421:  # the server is closing the connection
                raise smtplib.SMTPRecipientsRefused(refused)
        if len(refused) == len(to_addrs):
            raise smtplib.SMTPRecipientsRefused(refused)
        code, reply = self.docmd("data")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        self.handed_over = True
        content = re.sub(rb"(?m)^\.", b"..", msg)  # dot-stuffing, as smtplib.SMTP.data does
        if not content.endswith(b"\r\n"):
            content += b"\r\n"
        self.send(content + b".\r\n")
        code, reply = self.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return refused


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye if the connection is still up; the outcome is already known."""
    try:
        if smtp.sock is not None:
            smtp.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        smtp.close()


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    return f"{type(exc).__name__}: {exc}"


# SES's answers that say the call was refused before anything was done, and that waiting may help
_THROTTLING = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException", "ServiceUnavailable"}
_NOT_TAKEN_STATUSES = {429, 503}
# botocore errors raised before a request leaves: missing credentials (fixable; the message waits) or an invalid request
_BEFORE_SENDING_RETRYABLE = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "NoRegionError")


class SesTransport:
    """Amazon SES v2 `send_email` with `Simple` content: SES builds the MIME.

    With `pacer`, calls keep under the account's maximum send rate; a throttled call is tried again
    (through the pacer, so retries count against the rate) up to `throttle_retries` times before the
    email is handed back as retryable.

    What a failure means (`ses_failure`): retryable only when it proves the message did not leave (no
    connection could be made, SES throttled it or was unavailable); failed when SES refused it (4xx);
    OutcomeUnknown when the request was sent and no usable answer came (read timeout, connection closed or
    reset, a broken answer, a 5xx other than 503: SES or a gateway failed while handling it, it may have
    sent it)."""

    def __init__(self, client, configuration_set: str | None = None, *, pacer: Pacer | None = None,
                 throttle_retries: int = 3) -> None:
        self.client, self.configuration_set = client, configuration_set
        self.pacer, self.throttle_retries = pacer, throttle_retries

    def send(self, email: OutgoingEmail) -> str:
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.parsers import ResponseParserError

        # what the sesv2 model asks: a Subject of 7-bit ASCII, RFC 2047 encoded-words for the rest (and no Charset:
        # SES takes it as it is), header values of printable ASCII (at most 995 characters), display names as
        # encoded-words and domains in Punycode. These are the values build_mime writes, each on one line.
        simple = {
            "Subject": {"Data": header_value("Subject", email.subject)},
            "Body": {"Text": {"Data": email.text, "Charset": "UTF-8"}, "Html": {"Data": email.html, "Charset": "UTF-8"}},
        }
        if email.headers:
            simple["Headers"] = _ses_headers(email.headers)
        request = {
            "FromEmailAddress": header_value("From", email.from_),
            "Destination": {"ToAddresses": [header_value("To", email.to)]},
            "Content": {"Simple": simple},
        }
        if email.reply_to:
            request["ReplyToAddresses"] = [header_value("Reply-To", email.reply_to)]
        if email.tags:
            request["EmailTags"] = [{"Name": k, "Value": _tag_value(v)} for k, v in email.tags.items()]
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        for attempt in range(self.throttle_retries + 1):
            if self.pacer is not None:
                self.pacer.wait()
            try:
                answer = self.client.send_email(**request)
            except ClientError as exc:
                if _throttled(exc) and attempt < self.throttle_retries:
                    continue  # SES refused before sending: the same call again, at the pace
                raise ses_failure(exc) from exc
            except (BotoCoreError, ResponseParserError) as exc:
                raise ses_failure(exc) from exc
            message_id = answer.get("MessageId") if isinstance(answer, dict) else None
            if not message_id:
                raise OutcomeUnknown(f"SES answered without a MessageId ({answer!r:.200}): it may have sent it")
            return message_id
        raise AssertionError("unreachable")


def _ses_headers(headers: dict[str, str]) -> list[dict[str, str]]:
    """SES `Headers`: at most 15; each value printable ASCII, 1 to 995 characters, with its name at most 996."""
    if len(headers) > 15:
        raise ValueError(f"SES takes at most 15 headers, not {len(headers)}")
    written = []
    for name, value in headers.items():
        value = header_value(safe_header("header name", name), value)
        if not 1 <= len(value) <= 995 or len(name) + len(value) > 996:
            raise ValueError(f"SES refuses header {name} of {len(value)} characters (1 to 995, with its name 996)")
        written.append({"Name": name, "Value": value})
    return written


def _throttled(exc) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in _THROTTLING or status in _NOT_TAKEN_STATUSES


def ses_failure(exc: Exception) -> DeliveryError:
    """The DeliveryError a botocore error from `send_email` stands for (see SesTransport)."""
    from botocore import exceptions as e

    if isinstance(exc, e.ClientError):
        code = exc.response.get("Error", {}).get("Code", "") or "?"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        told = f"SES {status} {code}: {exc}"
        if _throttled(exc) or status == 408:  # 408: the request did not even arrive whole
            return DeliveryError(told, retryable=True)
        if 400 <= status < 500:
            return DeliveryError(told, retryable=False)
        return OutcomeUnknown(f"{told} (SES failed while handling the call: it may have sent it)")
    if isinstance(exc, e.SSLError):  # a failed handshake sent nothing; a TLS error while reading the answer may have
        if _caused_by(exc, ssl.SSLCertVerificationError, ssl.CertificateError):
            return DeliveryError(f"SES TLS handshake refused: {exc}", retryable=True)
        return OutcomeUnknown(f"SES TLS error, maybe after the request was sent: {exc}")
    if isinstance(exc, e.ConnectionError):  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError
        return DeliveryError(f"SES unreachable: {exc}", retryable=True)
    if isinstance(exc, e.ParamValidationError):
        return DeliveryError(f"SES request invalid: {exc}", retryable=False)
    if type(exc).__name__ in _BEFORE_SENDING_RETRYABLE:
        return DeliveryError(f"SES not called: {exc}", retryable=True)
    # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError, any other HTTPClientError, an answer
    # that does not parse, or an error botocore raised at a point it does not say: the request may have left
    return OutcomeUnknown(f"SES gave no usable answer ({type(exc).__name__}: {exc}): it may have sent the message")


def _caused_by(exc: BaseException, *types: type) -> bool:
    """Whether `exc` wraps one of `types` (botocore keeps the wrapped error in kwargs['error'], urllib3 in args)."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, types):
            return True
        todo += [c for c in (getattr(current, "kwargs", {}).get("error"), current.__cause__, current.__context__,
                             *getattr(current, "args", ())) if isinstance(c, BaseException)]
    return False


def _tag_value(value: str) -> str:
    """SES tag values: ASCII letters, digits, _ and - only."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in value)[:256] or "none"


class NullTransport:
    """Keeps nothing; counts what it was given."""

    def __init__(self) -> None:
        self.count = 0

    def send(self, email: OutgoingEmail) -> str:
        self.count += 1
        return f"null-{self.count}"


def make_transport(settings) -> Transport:
    """The transport RELANCE_TRANSPORT names."""
    match settings.transport:
        case "file":
            return FileTransport(settings.outbox_dir, message_id_domain=settings.message_id_domain)
        case "smtp":
            return SmtpTransport(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout,
                                 message_id_domain=settings.message_id_domain)
        case "ses":
            import boto3

            from botocore.config import Config

            # relance decides what to try again: throttling at the pace, never a call whose answer was lost
            # (botocore's own retries would resend it); a hanging endpoint costs ses_timeout, not minutes
            client = boto3.client("sesv2", region_name=settings.ses_region, endpoint_url=settings.ses_endpoint_url,
                                  config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                                connect_timeout=settings.ses_timeout, read_timeout=settings.ses_timeout))
            pacer = Pacer(settings.ses_max_send_rate) if settings.ses_max_send_rate else None
            return SesTransport(client, settings.ses_configuration_set, pacer=pacer)
        case "null":
            return NullTransport()
    raise ValueError(f"unknown transport {settings.transport!r}: use file, smtp, ses or null")
