"""How emails leave: file (default), SMTP, Amazon SES (sesv2), or nowhere (benchmarks, simulations)."""

from __future__ import annotations

import os
import smtplib
import uuid
from pathlib import Path
from typing import Protocol

from relance.email.message import OutgoingEmail, build_mime, safe_header
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

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def send(self, email: OutgoingEmail) -> str:
        message = build_mime(email)
        name = str(email.outbox_id) if email.outbox_id is not None else uuid.uuid4().hex
        target = self.directory / f"{name}.eml"
        temporary = self.directory / f".{name}.eml.tmp"
        temporary.write_bytes(message.as_bytes())
        os.replace(temporary, target)
        return message["Message-ID"]


class SmtpTransport:
    """Plain SMTP, one connection per batch of sends is left to the server's keep-alive."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def send(self, email: OutgoingEmail) -> str:
        message = build_mime(email)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=30) as smtp:
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipient refused: {exc.recipients}", retryable=False) from exc
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
            raise DeliveryError(f"SMTP {self.host}:{self.port}: {exc}", retryable=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", retryable=400 <= exc.smtp_code < 500) from exc
        return message["Message-ID"]


_THROTTLING = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException", "ServiceUnavailable"}


class SesTransport:
    """Amazon SES v2 `send_email` with `Simple` content: SES builds the MIME.

    With `pacer`, calls keep under the account's maximum send rate; a throttled call is tried again
    (through the pacer, so retries count against the rate) up to `throttle_retries` times before the
    email is handed back as retryable."""

    def __init__(self, client, configuration_set: str | None = None, *, pacer: Pacer | None = None,
                 throttle_retries: int = 3) -> None:
        self.client, self.configuration_set = client, configuration_set
        self.pacer, self.throttle_retries = pacer, throttle_retries

    def send(self, email: OutgoingEmail) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        simple = {
            "Subject": {"Data": safe_header("Subject", email.subject), "Charset": "UTF-8"},
            "Body": {"Text": {"Data": email.text, "Charset": "UTF-8"}, "Html": {"Data": email.html, "Charset": "UTF-8"}},
        }
        if email.headers:
            simple["Headers"] = [{"Name": k, "Value": safe_header(k, v)} for k, v in email.headers.items()]
        request = {
            "FromEmailAddress": safe_header("From", email.from_),
            "Destination": {"ToAddresses": [safe_header("To", email.to)]},
            "Content": {"Simple": simple},
        }
        if email.reply_to:
            request["ReplyToAddresses"] = [email.reply_to]
        if email.tags:
            request["EmailTags"] = [{"Name": k, "Value": _tag_value(v)} for k, v in email.tags.items()]
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        for attempt in range(self.throttle_retries + 1):
            if self.pacer is not None:
                self.pacer.wait()
            try:
                return self.client.send_email(**request)["MessageId"]
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code in _THROTTLING and attempt < self.throttle_retries:
                    continue  # SES refused before sending: the same call again, at the pace
                raise DeliveryError(f"SES {code}: {exc}", retryable=code in _THROTTLING or status >= 500) from exc
            except BotoCoreError as exc:
                raise DeliveryError(f"SES unreachable: {exc}", retryable=True) from exc
        raise AssertionError("unreachable")


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


class RecordingTransport:
    """Keeps every email it was given (tests)."""

    def __init__(self) -> None:
        self.sent: list[OutgoingEmail] = []

    def send(self, email: OutgoingEmail) -> str:
        build_mime(email)  # the same checks as a real transport
        self.sent.append(email)
        return f"recorded-{len(self.sent)}"


def make_transport(settings) -> Transport:
    """The transport RELANCE_TRANSPORT names."""
    match settings.transport:
        case "file":
            return FileTransport(settings.outbox_dir)
        case "smtp":
            return SmtpTransport(settings.smtp_host, settings.smtp_port)
        case "ses":
            import boto3

            from botocore.config import Config

            # relance retries throttling itself, at the pace; botocore's own retries would not wait for it
            client = boto3.client("sesv2", region_name=settings.ses_region, endpoint_url=settings.ses_endpoint_url,
                                  config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
            pacer = Pacer(settings.ses_max_send_rate) if settings.ses_max_send_rate else None
            return SesTransport(client, settings.ses_configuration_set, pacer=pacer)
        case "null":
            return NullTransport()
    raise ValueError(f"unknown transport {settings.transport!r}: use file, smtp, ses or null")
