"""The lawful basis the tests' leads come with (relance.consent): without one, their marketing email is not sent.

Tests about something else give the leads they create by hand a basis at their door, as an import or a form would:
`upsert_lead(..., fields=professional())`, `Lead(..., fields=professional())`, an event with `PROFESSIONAL_PROPS`."""

from __future__ import annotations

from typing import Any

SOURCE = "tests: a professional contact"
PROFESSIONAL_PROPS = {"basis": "legitimate_interest", "basis_source": SOURCE}  # an event's properties (any door)


def professional(**fields: Any) -> dict[str, Any]:
    """A lead's fields with a legitimate interest as its basis (and `fields` besides)."""
    return {"basis": {"basis": "legitimate_interest", "source": SOURCE, "at": "2026-01-01T00:00:00+00:00",
                      "channel": "tests"}, **fields}
