"""Signed tracking tokens, link rewriting, the open pixel and one-click unsubscribe headers.

A token is `payload.signature`: the payload is compact JSON (base64url) naming the outbox row,
the lead, what the token is for (`c` click, `o` open, `u` unsubscribe) and, for clicks, the
destination; the signature is an HMAC-SHA256 with RELANCE_SECRET_KEY (links signed
with a key named in RELANCE_SECRET_KEYS_OLD still verify, so a key can be rotated). A click token carries
its own destination, so the redirector only ever goes where relance itself wrote a link.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
from typing import Any, Sequence

CLICK, OPEN, UNSUBSCRIBE = "c", "o", "u"
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once: json.dumps builds one per call
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=8)
def _keyed(secret: str) -> "hmac.HMAC":
    """The HMAC keyed with this secret, ready to copy (keying costs as much as signing a token)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _mac(secret: str, body: str) -> str:
    mac = _keyed(secret).copy()
    mac.update(body.encode())
    return _b64(mac.digest()[:20])


def sign(secret: str, *, kind: str, outbox_id: int, lead_id: int, email: str, link: str | None = None) -> str:
    payload: dict[str, Any] = {"k": kind, "o": outbox_id, "l": lead_id, "e": email}
    if link is not None:
        payload["u"] = link
    body = _b64(_COMPACT.encode(payload).encode())
    return f"{body}.{_mac(secret, body)}"


def verify(keys: str | Sequence[str], token: str, *, kind: str) -> dict[str, Any] | None:
    """The payload of a genuine token of this kind, else None (forged, altered, wrong kind, not ASCII).

    `keys` is the current key then the keys it replaced (RELANCE_SECRET_KEYS_OLD): a link sent before a rotation
    still works. Every key is tried, so the time taken does not tell which one matched."""
    if not token.isascii():  # relance writes base64url only; compare_digest refuses other text
        return None
    body, _, signature = token.partition(".")
    if not body or not signature:
        return None
    matched = [hmac.compare_digest(signature, _mac(key, body)) for key in ((keys,) if isinstance(keys, str) else keys)]
    if not any(matched):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) and payload.get("k") == kind else None


def track_html(html: str, *, public_url: str, secret: str, outbox_id: int, lead_id: int, email: str,
               skip: tuple[str, ...] = ()) -> str:
    """Rewrite http(s) links through the click tracker and add the open pixel."""
    base = public_url.rstrip("/")

    def rewrite(match: re.Match[str]) -> str:
        link = match.group(2).replace("&amp;", "&")
        if link.startswith(base + "/") or link in skip:
            return match.group(0)
        token = sign(secret, kind=CLICK, outbox_id=outbox_id, lead_id=lead_id, email=email, link=link)
        return f"{match.group(1)}{base}/c/{token}{match.group(3)}"

    tracked = _HREF.sub(rewrite, html)
    pixel_token = sign(secret, kind=OPEN, outbox_id=outbox_id, lead_id=lead_id, email=email)
    pixel = f'<img src="{base}/o/{pixel_token}.gif" width="1" height="1" alt="" style="display:block;border:0;height:1px;width:1px" />'
    if "</body>" in tracked:
        return tracked.replace("</body>", pixel + "</body>", 1)
    return tracked + pixel


def unsubscribe_url(*, public_url: str, secret: str, outbox_id: int, lead_id: int, email: str) -> str:
    token = sign(secret, kind=UNSUBSCRIBE, outbox_id=outbox_id, lead_id=lead_id, email=email)
    return f"{public_url.rstrip('/')}/u/{token}"


def unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe (RFC 2369 List-Unsubscribe with the POST marker)."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
