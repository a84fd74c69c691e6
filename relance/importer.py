"""Lead import from CSV: parse and check every row (pure), then upsert the good ones by email.

Parsing never stops at the first bad row: each problem names the row a spreadsheet shows
(header = row 1) and the column, bad rows are left out, good rows go on. Importing fills or
updates profile fields only; the score, stage and history of a known lead are never reset,
and its source (first touch, what "leads by source" counts) is filled, never replaced.
A new lead whose address is on the suppression list comes in suppressed.

Suppression lists (`relance suppress import`) are read here too, with the same row numbers:
a CSV with an `email` column (and an optional `reason`), or one address per line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import insert
from sqlmodel import Session, select

from relance.clock import ensure_utc
from relance.inputs import (  # the checks every door shares (CLI, API, SES, import)
    checked_country, checked_email, checked_language, checked_revenue, checked_sector, checked_timezone, one_line,
    parse_amount,
)
from relance.inputs import fold as _fold
from relance.store.tables import Lead
from relance.suppression import REASONS, honour_list_of

PROFILE_FIELDS: tuple[str, ...] = (
    "first_name", "last_name", "job_title", "company", "sector", "company_revenue",
    "country", "timezone", "language", "source",
)
COLUMNS: tuple[str, ...] = ("email", *PROFILE_FIELDS)
BATCH_SIZE = 500

# Headers as marketers' exports spell them (French CRMs, Excel) -> our column names.
_ALIASES = {
    "e_mail": "email", "mail": "email", "courriel": "email", "adresse_email": "email",
    "prenom": "first_name", "firstname": "first_name", "nom": "last_name", "lastname": "last_name",
    "poste": "job_title", "fonction": "job_title", "title": "job_title",
    "societe": "company", "entreprise": "company", "secteur": "sector",
    "chiffre_d_affaires": "company_revenue", "revenue": "company_revenue", "ca": "company_revenue",
    "pays": "country", "fuseau_horaire": "timezone", "langue": "language",
}
# Only countries with one timezone / one main business language get a default: never guess CA's zone.
_COUNTRY_TIMEZONE = {
    "FR": "Europe/Paris", "BE": "Europe/Brussels", "CH": "Europe/Zurich", "DE": "Europe/Berlin",
    "ES": "Europe/Madrid", "IT": "Europe/Rome", "LU": "Europe/Luxembourg", "NL": "Europe/Amsterdam",
    "AT": "Europe/Vienna", "GB": "Europe/London", "IE": "Europe/Dublin", "MC": "Europe/Monaco",
}
_COUNTRY_LANGUAGE = {"FR": "fr", "DE": "de", "AT": "de", "ES": "es", "IT": "it", "NL": "nl", "GB": "en", "IE": "en", "MC": "fr"}

@dataclass(frozen=True)
class RowProblem:
    """Something wrong (or worth knowing) about one row of the file."""

    row_number: int
    field: str
    message: str
    level: Literal["error", "warning", "info"] = "error"

    def __str__(self) -> str:
        return f"{self.row_number}: {self.field}: {self.message}"


class LeadRow(BaseModel):
    """One checked row: a lower-case email and the profile fields the row filled (None = empty cell)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    row_number: int = Field(exclude=True, description="Spreadsheet row (header = 1) this row came from.")
    email: str
    first_name: str | None = None
    last_name: str | None = None
    job_title: str | None = None
    company: str | None = None
    sector: str | None = None
    company_revenue: int | None = None
    country: str | None = None
    timezone: str | None = None
    language: str | None = None
    source: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return checked_email(value)

    @field_validator("first_name", "last_name", "job_title", "company", "source")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value)

    @field_validator("sector")
    @classmethod
    def _sector(cls, value: str | None) -> str | None:
        return None if value is None else checked_sector(value)

    @field_validator("company_revenue", mode="before")
    @classmethod
    def _revenue(cls, value: object) -> object:
        return parse_amount(value) if isinstance(value, str) else value

    @field_validator("company_revenue")
    @classmethod
    def _revenue_not_negative(cls, value: int | None) -> int | None:
        return checked_revenue(value)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return None if value is None else checked_country(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else checked_timezone(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else checked_language(value)

    def profile(self) -> dict[str, object]:
        """The profile fields this row filled (empty cells left out)."""
        return {name: getattr(self, name) for name in PROFILE_FIELDS if getattr(self, name) is not None}


@dataclass
class _ParsedFile:
    """Every problem found in a file, in file order."""

    problems: list[RowProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[RowProblem]:
        return [p for p in self.problems if p.level == "error"]


@dataclass
class ImportResult(_ParsedFile):
    """The good rows (duplicates merged) and every problem found, in file order."""

    rows: list[LeadRow] = field(default_factory=list)

    @property
    def rejected_rows(self) -> int:
        """How many rows were left out because of an error."""
        return len({p.row_number for p in self.errors if p.row_number > 1})


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: leads created, leads whose profile changed, rows left out."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    suppressed: int = 0  # of the leads created, those whose address was on the suppression list


def _column_of(header: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", _fold(header)).strip("_")
    return _ALIASES.get(key, key)


def _sniff_delimiter(first_line: str) -> str:
    # French Excel writes `;`-separated CSV; a header has no commas or semicolons of its own.
    return ";" if first_line.count(";") > first_line.count(",") else ","


def _field_of(error: dict) -> str:
    return str(error["loc"][0]) if error["loc"] else "row"


def _message_of(error: dict) -> str:
    if error["loc"] == ("email",) and error.get("input") is None:
        return "empty: every row needs an email address"
    return str(error["msg"]).removeprefix("Value error, ")


def _records(reader: Iterator[list[str]], result: ImportResult) -> Iterator[list[str]]:
    """The reader's records; a file the csv module cannot read further ends with a problem, not a crash."""
    row_number = 1
    try:
        for row_number, cells in enumerate(reader, start=2):
            yield cells
    except csv.Error as exc:
        result.problems.append(RowProblem(row_number + 1, "row", f"the CSV cannot be read from here on ({exc}): "
                                          "this row and the ones after it are left out"))


def parse_leads_csv(text: str, *, source: str | None) -> ImportResult:
    """Check every row of a leads CSV; `source` fills the source of rows that have none."""
    result = ImportResult()
    text = text.removeprefix("\ufeff")
    if not text.strip():
        result.problems.append(RowProblem(1, "header", "the file is empty: expected a header row with an email column"))
        return result
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text.splitlines()[0]))
    header = next(reader)
    columns = [_column_of(name) for name in header]
    if "email" not in columns:
        result.problems.append(RowProblem(1, "email", f"no email column in the header ({', '.join(header)}): "
                                                       f"expected the columns {', '.join(COLUMNS)}"))
        return result
    known: dict[str, int] = {}  # column -> index of its first occurrence
    for index, (name, column) in enumerate(zip(header, columns)):
        label = name.strip() or f"column {index + 1}"
        if column not in COLUMNS:
            result.problems.append(RowProblem(1, label, "unknown column, ignored: known columns are "
                                              + ", ".join(COLUMNS), level="warning"))
        elif column in known:
            result.problems.append(RowProblem(1, label, f"a second {column} column, ignored", level="warning"))
        else:
            known[column] = index

    merged: dict[str, LeadRow] = {}
    # A spreadsheet shows one row per record, so record n is row n + 1, blank lines included.
    for row_number, cells in enumerate(_records(reader, result), start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header):]):
            result.problems.append(RowProblem(row_number, "row", f"{len(cells)} cells for {len(header)} columns "
                                              "(an unquoted comma or semicolon in a value?): row left out"))
            continue
        values = {column: cells[index] if index < len(cells) else "" for column, index in known.items()}
        try:
            row = LeadRow.model_validate({**values, "row_number": row_number})
        except ValidationError as exc:
            for error in exc.errors():
                result.problems.append(RowProblem(row_number, _field_of(error), _message_of(error)))
            continue
        earlier = merged.get(row.email)
        if earlier is None:
            merged[row.email] = row
        else:
            merged[row.email] = earlier.model_copy(update=row.profile())
            result.problems.append(RowProblem(row_number, "email", f"{row.email} already on row {earlier.row_number}: "
                                              "rows merged, this row's filled cells win", level="info"))
    # the default source applies after merging, so it never beats a source a duplicate row gave
    result.rows = [row if row.source or not source else row.model_copy(update={"source": source}) for row in merged.values()]
    return result


def _new_lead(row: LeadRow, now: datetime) -> Lead:
    profile = row.profile()
    if "timezone" not in profile and row.country in _COUNTRY_TIMEZONE:
        profile["timezone"] = _COUNTRY_TIMEZONE[row.country]
    if "language" not in profile and row.country in _COUNTRY_LANGUAGE:
        profile["language"] = _COUNTRY_LANGUAGE[row.country]
    return Lead(email=row.email, **profile, created_at=now, updated_at=now)


def import_leads(session: Session, result: ImportResult, *, now: datetime, batch_size: int = BATCH_SIZE) -> ImportSummary:
    """Upsert the good rows by email in batches; known leads keep their score, stage and history."""
    now = ensure_utc(now)
    created = updated = unchanged = suppressed = 0
    for start in range(0, len(result.rows), batch_size):
        batch = result.rows[start:start + batch_size]
        existing = {lead.email: lead for lead in session.exec(select(Lead).where(Lead.email.in_([r.email for r in batch])))}
        new_leads = []
        for row in batch:
            lead = existing.get(row.email)
            if lead is None:
                new_leads.append(_new_lead(row, now))
                continue
            changes = {name: value for name, value in row.profile().items() if getattr(lead, name) != value}
            if lead.source:
                changes.pop("source", None)  # first touch: the source that brought the lead stays, for the KPIs
            if not changes:
                unchanged += 1
                continue
            for name, value in changes.items():
                setattr(lead, name, value)
            lead.updated_at = now
            session.add(lead)
            updated += 1
        if new_leads:
            # one executemany INSERT per batch; ORM add_all would insert row by row on SQLite to read back ids
            session.execute(insert(Lead), [lead.model_dump(exclude={"id"}) for lead in new_leads])
            suppressed += honour_list_of(session, [lead.email for lead in new_leads])  # listed: never mailed
        session.flush()
        created += len(new_leads)
    return ImportSummary(created=created, updated=updated, unchanged=unchanged, skipped=result.rejected_rows,
                         suppressed=suppressed)


# --------------------------------------------------------------------------- suppression lists


@dataclass(frozen=True)
class SuppressionRow:
    row_number: int
    email: str
    reason: str


@dataclass
class SuppressionFile(_ParsedFile):
    """The addresses of a suppression list (duplicates merged, first row kept) and every problem found."""

    rows: list[SuppressionRow] = field(default_factory=list)


def parse_suppression_list(text: str, *, reason: str) -> SuppressionFile:
    """Check every row of a suppression list; `reason` is that of rows without a (known) one.

    A file whose first line has an `email` column is a CSV (`,` or `;`, an optional `reason`
    column); otherwise it is one address per line, from line 1. Bad rows are reported and left
    out; a row with an unknown reason is kept with `reason` (an address to suppress is never
    dropped for its reason), with a warning."""
    if reason not in REASONS:
        raise ValueError(f"unknown reason {reason!r}: use one of {', '.join(REASONS)}")
    result = SuppressionFile()
    text = text.removeprefix("\ufeff")
    if not text.strip():
        result.problems.append(RowProblem(1, "header", "the file is empty: expected addresses, or a header row with an email column"))
        return result
    delimiter = _sniff_delimiter(text.splitlines()[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    first = next(reader)
    columns = [_column_of(name) for name in first]
    if "email" in columns:
        email_at = columns.index("email")
        reason_at = columns.index("reason") if "reason" in columns else None
        records, start = _records(reader, result), 2
    elif len(first) == 1 and "@" in first[0]:  # no header: one address per line
        email_at, reason_at = 0, None
        records, start = _plain_lines(first, reader, result), 1
    else:
        result.problems.append(RowProblem(1, "email", f"no email column in the header ({', '.join(first)}): "
                                          "expected an email column (and optionally reason), or one address per line"))
        return result
    seen: dict[str, int] = {}
    for row_number, cells in enumerate(records, start=start):
        if not any(cell.strip() for cell in cells):
            continue
        value = cells[email_at].strip() if email_at < len(cells) else ""
        if not value:
            result.problems.append(RowProblem(row_number, "email", "empty: every row needs an email address"))
            continue
        try:
            email = checked_email(value)
        except ValueError as exc:
            result.problems.append(RowProblem(row_number, "email", str(exc)))
            continue
        given = cells[reason_at].strip().lower() if reason_at is not None and reason_at < len(cells) else ""
        if given and given not in REASONS:
            result.problems.append(RowProblem(row_number, "reason", f"unknown reason {given!r} (known: {', '.join(REASONS)}): "
                                              f"the address is suppressed as {reason}", level="warning"))
            given = ""
        if email in seen:
            result.problems.append(RowProblem(row_number, "email", f"{email} already on row {seen[email]}: that row is kept",
                                              level="info"))
            continue
        seen[email] = row_number
        result.rows.append(SuppressionRow(row_number, email, given or reason))
    return result


def _plain_lines(first: list[str], reader: Iterator[list[str]], result: SuppressionFile) -> Iterator[list[str]]:
    """A list without a header: its first line is an address too."""
    yield first
    yield from _records(reader, result)
