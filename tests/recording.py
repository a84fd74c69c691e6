"""A transport for tests: keeps every email it was given, after the checks a real transport makes."""

from __future__ import annotations

from relance.email.message import OutgoingEmail, build_mime


class RecordingTransport:
    """Keeps every email it was given."""

    def __init__(self) -> None:
        self.sent: list[OutgoingEmail] = []

    def send(self, email: OutgoingEmail) -> str:
        build_mime(email)  # the same checks as a real transport
        self.sent.append(email)
        return f"recorded-{len(self.sent)}"
