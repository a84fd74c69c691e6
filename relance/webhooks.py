"""`notify: {webhook: URL}`: POST the lead to another system (a CRM, a chat channel's hook).

A webhook goes through the outbox like an email, so a retry or a crash never posts twice from
relance's side; each POST also carries `Idempotency-Key: relance-outbox-<id>` so a receiver can
drop a repeat, and `X-Relance-Signature: sha256=<hex>` (HMAC of the body with RELANCE_SECRET_KEY)
so it can check the call came from relance.

A webhook never reaches inside the network relance runs in: a destination that is (or whose name
resolves to) a loopback, private, link-local, unspecified, multicast or reserved address is refused,
unless RELANCE_WEBHOOK_ALLOW names its host or a network (CIDR) holding it. The name is resolved right
before connecting and the connection goes to the address that was checked, so a name that resolves
elsewhere on the second look (DNS rebinding) still reaches only the checked address. Proxies named in the
environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) are ignored: a proxy would connect in relance's place, to
whatever the name means to it, past the check.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

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


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[\w-]+(\.[\w-]+)*\.?$")


@dataclass(frozen=True)
class Allowed:
    """RELANCE_WEBHOOK_ALLOW, read: the host names and networks a webhook may reach inside."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def holds(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)


@lru_cache(maxsize=16)
def allowed(text: str) -> Allowed:
    """Comma-separated host names, addresses and CIDRs (`crm.internal, 10.20.0.0/16, ::1`);
    ValueError naming the entry that is none of them."""
    hosts: set[str] = set()
    networks = []
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            if not _HOST_NAME.match(entry) or "/" in entry:
                raise ValueError(f"{entry!r} is neither a host name nor an address or a network "
                                 "(write names and CIDRs separated by commas, like crm.internal,10.20.0.0/16)") from None
            hosts.add(entry.lower().rstrip("."))
    return Allowed(frozenset(hosts), tuple(networks))


def _forms(address: Address) -> list[Address]:
    """The address, and the IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64): each is judged."""
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    carried = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64:
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [*filter(None, carried), address]


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _inside(address: Address) -> str | None:
    """What kind of non-public address this is (None: a public one)."""
    for kind, flag in (("an unspecified", "is_unspecified"), ("a loopback", "is_loopback"), ("a link-local", "is_link_local"),
                       ("a multicast", "is_multicast"), ("a private", "is_private"), ("a reserved", "is_reserved")):
        if getattr(address, flag):
            return f"{kind} address"
    return None if address.is_global else "a non-public address"


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refused_address(address: Address, allow: Allowed, *, name: str | None = None) -> str | None:
    """Why a webhook may not reach this address (None: it may); `name`: the host name that resolved to it."""
    forms = _forms(address)
    if any(allow.holds(form) for form in forms):
        return None
    for form in forms:
        if kind := _inside(form):
            shown = f"{address}, a form of {form}," if form is not address else f"{address}"
            if name:
                return f"{name} resolves to {shown.rstrip(',')}, which is {kind} inside the network relance runs in"
            return f"{shown} is {kind}, inside the network relance runs in"
    return None


ALLOW_HINT = "name its host or network in RELANCE_WEBHOOK_ALLOW to allow it"


def literal_refusal(url: str, allow_text: str = "") -> str | None:
    """Why a webhook URL written with an address (no name to resolve) is refused; None for a name or an allowed one.
    What `relance validate` can tell without looking anything up."""
    host = urlsplit(url).hostname or ""
    address = _literal(host)
    if address is None or host.lower().rstrip(".") in allowed(allow_text).hosts:
        return None
    why = refused_address(address, allowed(allow_text))
    return f"{why}: {ALLOW_HINT}" if why else None


@dataclass(frozen=True)
class Target:
    """Where one POST goes: the URL to connect to (the checked address), and the headers and TLS name of the real host."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def target(url: str, allow_text: str = "", *, resolve=socket.getaddrinfo) -> Target:
    """Resolve the URL's host now and check every address it has; DeliveryError when one is refused (for good)
    or when the name does not resolve (a retry may help). The connection is then made to the checked address."""
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise DeliveryError(f"webhook URL {url!r} is malformed: {exc}", retryable=False) from None
    host, allow = parts.host, allowed(allow_text)
    if not host or parts.scheme not in ("http", "https"):
        raise DeliveryError(f"webhook URL {url!r} is malformed: it needs http:// or https:// and a host", retryable=False)
    if host.lower().rstrip(".") in allow.hosts:
        return Target(url, {}, {})
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if (address := _literal(host)) is not None:
        addresses = [address]
    else:
        try:
            found = resolve(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise DeliveryError(f"webhook {url}: the name {host} does not resolve ({exc})", retryable=True) from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))
    named = None if _literal(host) else host
    for address in addresses:
        if why := refused_address(address, allow, name=named):
            raise DeliveryError(f"webhook {url} refused: {why}; {ALLOW_HINT}", retryable=False)
    if not addresses:
        raise DeliveryError(f"webhook {url}: the name {host} has no address", retryable=True)
    pinned = parts.copy_with(host=str(addresses[0]))
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Target(str(pinned), {"Host": parts.netloc.decode("ascii")}, extensions)


def client() -> httpx.Client:
    """The HTTP client webhooks are posted with: it connects directly, never through a proxy of the environment."""
    # the certificates an operator names (SSL_CERT_FILE, SSL_CERT_DIR: a CRM inside with its own CA) still count
    return httpx.Client(trust_env=False, verify=httpx.create_ssl_context(trust_env=True))


def post(client: httpx.Client, url: str, body: dict[str, Any], *, secret: str, outbox_id: int, allow: str = "") -> None:
    """POST the body as JSON to a destination `target` checked just now (`allow`: RELANCE_WEBHOOK_ALLOW);
    a 2xx is done, a 4xx is refused for good, anything else may be retried."""
    raw = json.dumps(body, ensure_ascii=False, default=str).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"relance-outbox-{outbox_id}",
               "X-Relance-Signature": signature(secret, raw), "User-Agent": "relance"}
    destination = target(url, allow)
    try:
        response = client.post(destination.url, content=raw, headers={**headers, **destination.headers}, timeout=TIMEOUT_S,
                               extensions=destination.extensions)
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
