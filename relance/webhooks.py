"""`notify: {webhook: URL}`: POST the lead to another system (a CRM, a chat channel's hook).

A webhook goes through the outbox like an email, so a retry or a crash never posts twice from
relance's side; each POST also carries `Idempotency-Key: relance-outbox-<id>` so a receiver can
drop a repeat, and `X-Relance-Signature: sha256=<hex>` (HMAC of the body with RELANCE_SECRET_KEY)
so it can check the call came from relance.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import httpx

from relance.email.transports import DeliveryError

TIMEOUT_S = 10.0


def payload(*, lead: Any, scenario: str, step_id: str, at: datetime) -> dict[str, Any]:
    """What the receiver gets: who, where in which scenario, when."""
    return {
        "event": "relance.notify",
        "scenario": scenario,
        "step_id": step_id,
        "at": at.isoformat(),
        "lead": {
            "email": lead.email, "first_name": lead.first_name, "last_name": lead.last_name, "company": lead.company,
            "job_title": lead.job_title, "country": lead.country, "stage": lead.stage, "score": lead.score,
            "grade": lead.grade, "fields": dict(lead.fields or {}),
        },
    }


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(client: httpx.Client, url: str, body: dict[str, Any], *, secret: str, outbox_id: int) -> None:
    """POST the body as JSON; a 2xx is done, a 4xx is refused for good, anything else may be retried."""
    raw = json.dumps(body, ensure_ascii=False, default=str).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"relance-outbox-{outbox_id}",
               "X-Relance-Signature": signature(secret, raw), "User-Agent": "relance"}
    try:
        response = client.post(url, content=raw, headers=headers, timeout=TIMEOUT_S)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # nothing was sent, and never will be
        raise DeliveryError(f"webhook URL {url!r} is malformed: {exc}", retryable=False) from exc
    except httpx.HTTPError as exc:
        # Unlike an email, a webhook whose outcome is unknown (a read timeout, a connection reset or closed after
        # the request was sent) is retried: every POST of an outbox row carries the same Idempotency-Key, so the
        # receiver drops a repeat. Connection refused and connect timeouts are retried for the plain reason.
        raise DeliveryError(f"webhook {url}: {type(exc).__name__}: {exc}", retryable=True) from exc
    if response.is_success:
        return
    told = response.text[:200].strip()
    raise DeliveryError(f"webhook {url} answered {response.status_code}" + (f": {told}" if told else ""),
                        retryable=response.status_code >= 500 or response.status_code in (408, 429))
