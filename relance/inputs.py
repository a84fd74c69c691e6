"""What comes in, checked once for every door: an event and the lead fields it carries.

`relance event`, `POST /events`, SES notifications and ingestion itself check an event with
`checked_event` (and a lead-creating event's profile with `checked_profile`); the CSV importer
checks its cells with the same field checks. A check returns the clean value or raises a
ValueError whose message says, in one sentence, what is wrong and what to write instead;
`checked_event` raises BadInput, which also names the field.

The limits are those of the columns (relance/store/tables.py) and of what relance can act on:
an email of at most 320 characters, an event type of at most 64 lower-case letters, digits and
underscores, an idempotency key of at most 200 characters, a revenue of at most 10^15 euros (the
column holds 64 bits; a larger figure is a typo, and any below is exact as a JSON number), a real
ISO 3166 country and IANA timezone, no control character (NUL, escape, ...) in any text, and an
event time from 2000-01-01 to one day after now.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from zoneinfo import available_timezones

from relance.scenario.model import EVENT_TYPES
from relance.store.tables import PROFILE_FIELDS

EMAIL_MAX = 320  # lead.email
EVENT_TYPE_MAX = 64  # event.type
KEY_MAX = 200  # event.idempotency_key
TEXT_MAX = 200  # a profile field (name, company, job title, ...): one line
PROPERTY_NAME_MAX = 64
PROPERTY_TEXT_MAX = 4000  # a property value (a form's message, a URL, consent wording)
REVENUE_MAX = 10**15  # a thousand times the largest company's; exact as a float (2**53), far within the BIGINT column
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)  # no event relance acts on happened before
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)  # no instant relance stores is later (re-engage dates, deals)
FUTURE_SLACK = timedelta(days=1)  # an event may be stamped by a clock a little ahead of ours, not more

_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"  # local part, no empty dot-atoms
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"  # domain with a TLD
)
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*$"
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
_AMOUNT = re.compile(r"^(?P<number>\d+(?:[.,]\d+)?)\s*(?P<unit>k|m|md|mds|mrd|b)?$")
_UNIT = {None: 1, "k": 1_000, "m": 1_000_000, "md": 1_000_000_000, "mds": 1_000_000_000, "mrd": 1_000_000_000, "b": 1_000_000_000}
_SPACES = re.compile(r"[\s_\u00a0\u202f']+")  # thousands separators: spaces (incl. French NBSP), _, '
# Unicode's control characters (Cc: U+0000-001F, U+007F-009F) and lone halves of surrogate pairs (Cs), which no
# database stores; free text (a note, a message) may hold tabs and line breaks
_CONTROL_OR_BREAK = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# what those refuse, as JSON Schema patterns for the API's document (ECMA-262 and Python read \uXXXX alike); a lone
# surrogate is refused all the same, but no pattern engine agrees on how to write one
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"

# Country names seen in exports and forms -> ISO 3166-1 alpha-2; anything else must already be a code.
COUNTRY_NAMES = {
    "france": "FR", "belgique": "BE", "belgium": "BE", "belgie": "BE", "suisse": "CH", "switzerland": "CH",
    "schweiz": "CH", "canada": "CA", "allemagne": "DE", "germany": "DE", "deutschland": "DE",
    "espagne": "ES", "spain": "ES", "espana": "ES", "italie": "IT", "italy": "IT", "italia": "IT",
    "luxembourg": "LU", "pays-bas": "NL", "netherlands": "NL", "royaume-uni": "GB", "united kingdom": "GB",
}
COUNTRY_CODES = frozenset(  # ISO 3166-1 alpha-2, the 249 assigned codes
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ "
    "CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR "
    "GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO "
    "JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR "
    "MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO "
    "RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV "
    "TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW".split()
)
_TYPED = ("sector", "company_revenue", "country", "timezone", "language")  # profile fields with a check of their own
PROFILE_TEXT = tuple(name for name in PROFILE_FIELDS if name not in _TYPED)  # the rest: free text on one line


class BadInput(ValueError):
    """A value that cannot come in; `field` names it (`email`, `type`, `occurred_at`, `idempotency_key`, or a
    property), `in_properties` says whether it is one of the event's properties."""

    def __init__(self, message: str, *, field: str, in_properties: bool = False) -> None:
        super().__init__(message)
        self.field, self.in_properties = field, in_properties

    @property
    def loc(self) -> tuple[str, ...]:
        """Where in an event: ("email",) or ("properties", "country")."""
        return ("properties", self.field) if self.in_properties else (self.field,)


# --------------------------------------------------------------------------- text


def checked_text(value: str, *, max_length: int = PROPERTY_TEXT_MAX, multiline: bool = True) -> str:
    """The text, unchanged; ValueError if it holds a control character (NUL, escape; line breaks and tabs only when
    `multiline`), half of a surrogate pair, or more than `max_length` characters."""
    found = (_CONTROL if multiline else _CONTROL_OR_BREAK).search(value)
    if found:
        raise ValueError(f"{_shown(value)} contains the control character U+{ord(found.group()):04X}: remove it")
    if len(value) > max_length:
        raise ValueError(f"{_shown(value)} is {len(value)} characters long: at most {max_length}")
    return value


def one_line(value: str, max_length: int = TEXT_MAX) -> str:
    """The text on one line, runs of spaces and line breaks made one space; ValueError as `checked_text`."""
    return checked_text(" ".join(value.split()), max_length=max_length, multiline=False)


def _shown(value: str, width: int = 40) -> str:
    """A value as a message quotes it: escaped, cut when long."""
    return repr(value) if len(value) <= width else repr(value[:width]) + "..."


# --------------------------------------------------------------------------- lead fields


def checked_email(value: str) -> str:
    """The address, lower-case; ValueError if it is not one."""
    email = value.strip().lower()
    if len(email) > EMAIL_MAX or not _EMAIL.match(email) or len(email.split("@")[0]) > 64:
        raise ValueError(f"{_shown(value, 80)} is not an email address")
    return email


def fold(text: str) -> str:
    """Lower-case ASCII: `Société` -> `societe`, for matching headers and country names."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").strip().lower()


def checked_country(value: str) -> str:
    """The ISO 3166-1 alpha-2 code of a country (its code in any case, or a common name: France -> FR)."""
    code = COUNTRY_NAMES.get(fold(value), value.strip().upper())
    if code not in COUNTRY_CODES:
        raise ValueError(f"{_shown(value)} is not a country: write its two-letter ISO code, like FR, BE, CH or CA")
    return code


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def checked_timezone(value: str) -> str:
    """An IANA timezone name, as given; ValueError otherwise."""
    if value.strip() not in _zones():
        raise ValueError(f"{_shown(value)} is not a timezone: write an IANA name, like Europe/Paris or America/Montreal")
    return value.strip()


def checked_language(value: str) -> str:
    """A language code, normalised (`FR_ca` -> `fr-CA`); ValueError otherwise."""
    match = re.fullmatch(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{2}))?", value.strip())
    if not match:
        raise ValueError(f"{_shown(value)} is not a language: write a code like fr, en or fr-CA")
    language, region = match.groups()
    return language.lower() + (f"-{region.upper()}" if region else "")


def parse_amount(text: str) -> int | None:
    """`12 000 000`, `12_000_000`, `200k`, `12M`, `1,5M`, `2Md`, `350 k€` -> euros; empty -> None."""
    cleaned = _SPACES.sub("", text.strip().lower()).removesuffix("eur").removesuffix("€")
    if not cleaned:
        return None
    match = _AMOUNT.match(cleaned)
    if not match or (match.group("unit") is None and not cleaned.isdigit()):
        raise ValueError(
            f"{_shown(text.strip())} is not an amount: write digits (12 000 000) or a number with k, M or Md (350k, 1,5M)"
        )
    number = float(match.group("number").replace(",", ".")) if match.group("unit") else int(match.group("number"))
    return int(round(number * _UNIT[match.group("unit")]))


def checked_revenue(value: Any) -> int | None:
    """A company revenue in euros: a whole number from 0 to REVENUE_MAX, or an amount as text (`1,5M`)."""
    if isinstance(value, str):
        value = parse_amount(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not an amount: write digits (12000000) or a number with k, M or Md (350k, 1,5M)")
    if value < 0:
        raise ValueError("a revenue cannot be negative")
    if value > REVENUE_MAX:
        raise ValueError(f"{_digits(value)} is more than the largest revenue relance can hold ({_digits(REVENUE_MAX)})")
    return int(round(value))


def _digits(number: float) -> str:
    """12 000 000, as a French export writes it."""
    return (f"{number:,}" if isinstance(number, int) else f"{number:,.0f}").replace(",", " ")  # ints exactly, however long


def checked_sector(value: str) -> str:
    """A sector on one line, lower-case: scoring.yaml matches sectors exactly (`saas`, `industrie`)."""
    return one_line(value).lower()


_TYPED_CHECKS = {"sector": checked_sector, "company_revenue": checked_revenue, "country": checked_country,
                 "timezone": checked_timezone, "language": checked_language}
_PROFILE_CHECKS = {name: _TYPED_CHECKS.get(name, one_line) for name in PROFILE_FIELDS}


def checked_profile(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The lead fields among an event's properties, checked and normalised (empty ones left out); BadInput names the
    first bad one."""
    profile: dict[str, Any] = {}
    for name, check in _PROFILE_CHECKS.items():
        value = properties.get(name)
        if value is None or value == "":
            continue
        if name != "company_revenue" and not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadInput(f"{value!r} is not text", field=name, in_properties=True)
            value = str(value)
        try:
            checked = check(value)
        except ValueError as exc:
            raise BadInput(str(exc), field=name, in_properties=True) from None
        if checked not in (None, ""):
            profile[name] = checked
    return profile


# --------------------------------------------------------------------------- events


def checked_event_type(value: str) -> str:
    """An event type: lower-case letters, digits and underscores, at most 64. Unknown types are custom events; one
    that differs from a known type only by case, dashes or underscores is refused with the type it means."""
    meant = next((known for known in EVENT_TYPES if _type_key(known) == _type_key(value)), None)
    if meant is not None and meant != value:
        raise ValueError(f"{_shown(value)} is not an event type: did you mean {meant}?")
    if not _EVENT_TYPE.match(value) or len(value) > EVENT_TYPE_MAX:
        raise ValueError(f"{_shown(value)} is not an event type: write lower-case letters, digits and underscores "
                         f"(at most {EVENT_TYPE_MAX}), like form_submitted or webinar_attended")
    return value


def _type_key(value: str) -> str:
    return re.sub(r"[\s_.-]+", "", value.lower())


def checked_key(value: str) -> str:
    """An idempotency key: 1 to 200 characters, on one line."""
    if not value:
        raise ValueError("an idempotency key cannot be empty: leave it out to derive one from the event")
    return checked_text(value, max_length=KEY_MAX, multiline=False)


def checked_instant(value: datetime) -> datetime:
    """An instant as UTC (naive = UTC), from 2000-01-01 to 2100-01-01; ValueError otherwise."""
    try:
        when = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:
        when = EARLIEST - timedelta(days=1) if value.year < 2000 else LATEST
    if not EARLIEST <= when < LATEST:
        raise ValueError(f"{value.isoformat()} is out of range: relance keeps instants from "
                         f"{EARLIEST.date()} to {LATEST.date()}")
    return when


def checked_occurred_at(value: datetime, *, now: datetime) -> datetime:
    """When an event happened, as UTC: from 2000-01-01 to one day after `now`."""
    when = checked_instant(value)
    if when > now + FUTURE_SLACK:
        raise ValueError(f"{value.isoformat()} is in the future: an event happened at most a day after now "
                         f"({now.isoformat(timespec='seconds')})")
    return when


def checked_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """An event's properties: names of 1 to 64 characters, values text, numbers, true/false or empty (finite
    numbers, text without control characters); BadInput names the first bad one."""
    if not isinstance(properties, Mapping):
        raise BadInput(f"expected names and values, got {properties!r}", field="properties")
    for name, value in properties.items():
        if not isinstance(name, str) or not name.strip():
            raise BadInput(f"a property needs a name, got {name!r}", field=str(name), in_properties=True)
        try:
            checked_text(name, max_length=PROPERTY_NAME_MAX, multiline=False)
        except ValueError as exc:
            raise BadInput(f"property name {exc}", field=name[:PROPERTY_NAME_MAX], in_properties=True) from None
        try:
            _checked_value(value)
        except ValueError as exc:
            raise BadInput(str(exc), field=name, in_properties=True) from None
    return dict(properties)


def _checked_value(value: Any) -> None:
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number relance can keep")
        return
    if isinstance(value, str):
        checked_text(value)
        return
    raise ValueError(f"{_shown(repr(value))} is not a value: use text, a number, true, false or null")


def checked_event(event: Any, *, now: datetime) -> None:
    """Refuse an event (anything with type, email, occurred_at, properties, idempotency_key) that cannot come in;
    BadInput names the field. Its lead fields are checked apart (`checked_profile`), for events that create leads."""
    checks = (("type", checked_event_type, event.type), ("email", checked_email, event.email),
              ("occurred_at", lambda when: checked_occurred_at(when, now=now), event.occurred_at))
    for name, check, value in checks:
        try:
            if name != "occurred_at" and not isinstance(value, str):
                raise ValueError(f"{value!r} is not text")
            check(value)
        except ValueError as exc:
            raise BadInput(str(exc), field=name) from None
    if event.idempotency_key is not None:
        try:
            checked_key(event.idempotency_key)
        except ValueError as exc:
            raise BadInput(str(exc), field="idempotency_key") from None
    checked_properties(event.properties)
