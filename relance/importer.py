"""Lead import from CSV: parse and check every row (pure), then upsert the good ones by email.

Parsing never stops at the first bad row: each problem names the row a spreadsheet shows
(header = row 1) and the column, bad rows are left out, good rows go on. Importing fills or
updates profile fields only; the score, stage and history of a known lead are never reset,
and its source (first touch, what "leads by source" counts) is filled, never replaced.
A new lead whose address is on the suppression list comes in suppressed.

Files come as bytes: UTF-8 (with or without a BOM) and UTF-16/32 with a BOM or a recognisable
pattern of zero bytes are decoded as such; any other file is read as Windows-1252 (what Excel on
Windows writes; it is Latin-1 plus a few signs such as the euro), with a warning on row 1. Cells are
text: one starting with `=`, `+`, `-` or `@` (a spreadsheet formula) is kept as it is written.

Writing is set-based, a chunk of rows (sorted by email) per transaction: the chunk's known leads are
read in one query (locked), its new leads inserted in one statement that skips an address another
import has just inserted (that one is then merged like a known lead), the known ones updated in one
statement, fit and grade computed in Python. Two imports of overlapping files at the same time both
succeed, each lead once, its filled cells merged.

Suppression lists (`relance suppress import`) are read here too, decoded the same way and with the same
row numbers: a CSV with an `email` column (and an optional `reason`), or one address per line.

The lawful basis of each lead (relance.consent) comes from the `basis` column (consent or legitimate_interest),
`basis_source`, and for consent `consent_wording` and `consent_at`; `--basis`, `--source` and `--wording` fill the
rows that have none. A row with a bad basis (a value that is none, consent without its wording) is left out, named.
A consent becomes a consent record of the lead (its proof); a legitimate interest never replaces a basis recorded.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import JSON, Text, any_, bindparam, cast, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session

from relance.clock import ensure_utc, parse_instant
from relance.consent import basis_of, checked_basis, interest_record, merged as with_consent, with_interest
from relance.inputs import (  # the checks every door shares (CLI, API, SES, import)
    checked_country, checked_email, checked_instant, checked_language, checked_revenue, checked_sector, checked_timezone, one_line,
    PROFILE_TEXT, parse_amount,
)
from relance.inputs import fold as _fold
from relance.leads import fit_and_grade
from relance.scoring.config import ScoringConfig
from relance.store.tables import PROFILE_FIELDS, Lead, Suppression
from relance.suppression import REASONS, address_hash
from relance.wakes import wake_for_lead_changes

BASIS_COLUMNS: tuple[str, ...] = ("basis", "basis_source", "consent_wording", "consent_at")  # relance.consent
COLUMNS: tuple[str, ...] = ("email", *PROFILE_FIELDS, *BASIS_COLUMNS)
WORDING_MAX = 2000  # characters of a consent's wording (the API's limit too)
BATCH_SIZE = 1000
MAX_CHARS = 200  # of a text cell (an email: 320); a longer one is a mistake (a pasted paragraph), never a name

# Headers as marketers' exports spell them (French CRMs, Excel) -> our column names.
_ALIASES = {
    "e_mail": "email", "mail": "email", "courriel": "email", "adresse_email": "email",
    "prenom": "first_name", "firstname": "first_name", "nom": "last_name", "lastname": "last_name",
    "poste": "job_title", "fonction": "job_title", "title": "job_title",
    "societe": "company", "entreprise": "company", "secteur": "sector",
    "chiffre_d_affaires": "company_revenue", "revenue": "company_revenue", "ca": "company_revenue",
    "pays": "country", "fuseau_horaire": "timezone", "langue": "language",
    "lawful_basis": "basis", "legal_basis": "basis", "base_legale": "basis", "consent_source": "basis_source",
    "basis_wording": "consent_wording", "basis_at": "consent_at",
}
# Only countries with one timezone / one main business language get a default: never guess CA's zone.
_COUNTRY_TIMEZONE = {
    "FR": "Europe/Paris", "BE": "Europe/Brussels", "CH": "Europe/Zurich", "DE": "Europe/Berlin",
    "ES": "Europe/Madrid", "IT": "Europe/Rome", "LU": "Europe/Luxembourg", "NL": "Europe/Amsterdam",
    "AT": "Europe/Vienna", "GB": "Europe/London", "IE": "Europe/Dublin", "MC": "Europe/Monaco",
}
_COUNTRY_LANGUAGE = {"FR": "fr", "DE": "de", "AT": "de", "ES": "es", "IT": "it", "NL": "nl", "GB": "en", "IE": "en", "MC": "fr"}

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # NUL and the like; tabs and line breaks are spaces



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
    basis: str | None = None  # consent | legitimate_interest (relance.consent); None: none given
    basis_source: str | None = None
    consent_wording: str | None = None
    consent_at: str | None = None  # ISO, UTC; None: the import's time

    @field_validator("*", mode="before")
    @classmethod
    def _cell(cls, value: object, info: ValidationInfo) -> object:
        """An empty cell is None; a cell with an invisible control character or too long is refused."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        if bad := _CONTROL.search(value):
            raise ValueError(f"contains an invisible control character (U+{ord(bad.group()):04X}): remove it")
        limit = {"email": 320, "consent_wording": WORDING_MAX}.get(info.field_name, MAX_CHARS)
        if len(value.strip()) > limit:
            raise ValueError(f"{len(value.strip()):,} characters, {limit} at most")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return checked_email(value)

    @field_validator(*PROFILE_TEXT, "basis_source", "consent_wording")
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

    @field_validator("basis")
    @classmethod
    def _basis(cls, value: str | None) -> str | None:
        return None if value is None else checked_basis(value)

    @field_validator("consent_at")
    @classmethod
    def _consent_at(cls, value: str | None) -> str | None:
        return None if value is None else checked_instant(parse_instant(value)).isoformat()

    def basis_cells(self) -> dict[str, object]:
        """The basis cells this row filled (empty ones left out)."""
        return {name: getattr(self, name) for name in BASIS_COLUMNS if getattr(self, name) is not None}

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
    without_basis: int = field(default=0, compare=False)  # of the file's leads, those with no lawful basis: their marketing email is not sent


def _column_of(header: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", _fold(header)).strip("_")
    return _ALIASES.get(key, key)


def _sniff_delimiter(first_line: str) -> str:
    # French Excel writes `;`-separated CSV, its "Unicode text" tab-separated; a header has none of its own.
    return max((",", ";", "\t"), key=first_line.count) if first_line.strip() else ","


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_NOT_CSV = {b"PK\x03\x04": "an Excel workbook (.xlsx) or a zip archive", b"\xd0\xcf\x11\xe0": "an old Excel workbook (.xls)"}


def _encoding_of(data: bytes) -> str | None:
    """The encoding a BOM or the zero bytes of UTF-16 text show; None: no sign."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    head = data[:4000]
    if head.count(0) > len(head) // 4:  # ASCII in UTF-16: every other byte is zero
        return "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
    return None


def decode_csv(data: bytes) -> tuple[str, RowProblem | None]:
    """The text of a CSV file, and what the reader should know about its encoding (None: nothing).

    A BOM or UTF-16's zero bytes say how to read it; otherwise UTF-8, and when the bytes are not UTF-8,
    Windows-1252 (Latin-1 and the euro sign, what Excel on Windows writes) with a warning naming the
    row of the first byte that is not UTF-8. A workbook, or UTF-16 that does not decode, is an error."""
    for magic, what in _NOT_CSV.items():
        if data.startswith(magic):
            return "", RowProblem(1, "file", f"this is {what}, not a CSV: in Excel, save it as \"CSV UTF-8\" and import that file")
    encoding = _encoding_of(data)
    if encoding:
        try:
            return data.decode(encoding).removeprefix("\ufeff"), None
        except UnicodeDecodeError as exc:
            return "", RowProblem(1, "file", f"the file looks like {encoding.upper()} text but byte {exc.start} cannot be "
                                  "read as such: save it again as \"CSV UTF-8\"")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        row = data[:exc.start].count(b"\n") + 1
        text = data.decode("cp1252", errors="strict") if _is_cp1252(data) else data.decode("latin-1")
        return text, RowProblem(1, "file", f"not UTF-8 (row {row} has the byte 0x{data[exc.start]:02X}): read as "
                                "Windows-1252 / Latin-1, what Excel writes on Windows; if accents look wrong, save the "
                                "file as \"CSV UTF-8\"", level="warning")


def _is_cp1252(data: bytes) -> bool:
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:  # five bytes Windows-1252 leaves undefined: Latin-1 reads every byte
        return False
    return True


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


def read_leads_csv(data: bytes, *, source: str | None, progress: Callable[[int, int], None] | None = None,
                   **basis: str | None) -> ImportResult:
    """`parse_leads_csv` of a file's bytes, whatever its encoding (see `decode_csv`)."""
    text, note = decode_csv(data)
    if note is not None and note.level == "error":
        return ImportResult(problems=[note])
    result = parse_leads_csv(text, source=source, progress=progress, **basis)
    if note is not None:
        result.problems.insert(0, note)
    return result


def parse_leads_csv(text: str, *, source: str | None, progress: Callable[[int, int], None] | None = None,
                    basis: str | None = None, basis_source: str | None = None, wording: str | None = None) -> ImportResult:
    """Check every row of a leads CSV; `source` fills the source of rows that have none, `basis` (consent or
    legitimate_interest, `relance import --basis`) the basis of rows that have none, `basis_source` (default: the
    row's source) and `wording` (a consent's, `--wording`) theirs.

    `progress(rows read, rows in the file)` is called every thousand rows (the total counts lines)."""
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
    lines = text.count("\n") + (not text.endswith("\n")) - 1  # rows under the header, about (cells may hold line breaks)
    # A spreadsheet shows one row per record, so record n is row n + 1, blank lines included.
    for row_number, cells in enumerate(_records(reader, result), start=2):
        if progress is not None and row_number % 1000 == 0:
            progress(row_number - 1, max(lines, row_number - 1))
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
            merged[row.email] = earlier.model_copy(update={**row.profile(), **row.basis_cells()})
            result.problems.append(RowProblem(row_number, "email", f"{row.email} already on row {earlier.row_number}: "
                                              "rows merged, this row's filled cells win", level="info"))
    # the default source applies after merging, so it never beats a source a duplicate row gave
    rows = [row if row.source or not source else row.model_copy(update={"source": source}) for row in merged.values()]
    result.rows = []
    for row in rows:
        checked = _with_basis(row, basis=basis, basis_source=basis_source, wording=wording)
        if isinstance(checked, RowProblem):
            result.problems.append(checked)
        else:
            result.rows.append(checked)
    if not merged and not result.errors:
        result.problems.append(RowProblem(1, "header", "no rows under the header: nothing to import"))
    return result


def _with_basis(row: LeadRow, *, basis: str | None, basis_source: str | None, wording: str | None) -> LeadRow | RowProblem:
    """The row with its lawful basis complete (the command's defaults for empty cells), or what is missing.
    A consent wording without a basis is a consent; a basis source without a basis is a mistake."""
    kind = row.basis or ("consent" if row.consent_wording else basis)
    if kind is None:
        if row.basis_source:
            return RowProblem(row.row_number, "basis_source", "given without a basis: fill the basis column (consent or "
                              "legitimate_interest), or use --basis; row left out")
        return row
    said = row.consent_wording or wording
    if kind == "consent" and not said:
        return RowProblem(row.row_number, "consent_wording", "a consent needs the wording the person accepted: fill a "
                          "consent_wording column, or use --wording; row left out")
    origin = row.basis_source or row.source or basis_source
    if not origin:
        return RowProblem(row.row_number, "basis_source", f"{kind.replace('_', ' ')} needs its source: fill a basis_source "
                          "or source column, or use --source; row left out")
    return row.model_copy(update={"basis": kind, "basis_source": origin,
                                  "consent_wording": said if kind == "consent" else None})


def _basis_fields(fields: dict[str, object], row: LeadRow, now: datetime) -> dict[str, object]:
    """The lead's fields with the row's lawful basis: a consent is kept as a consent record (relance.consent), once;
    a legitimate interest as the basis, unless the lead has one."""
    if row.basis == "consent":
        current = fields.get("consent") if isinstance(fields.get("consent"), dict) else {}
        if current.get("granted", True) and (current.get("source"), current.get("wording")) == (row.basis_source, row.consent_wording):
            return fields  # the same consent, imported again
        return with_consent(fields, {"granted": True, "source": row.basis_source, "wording": row.consent_wording,
                                     "at": row.consent_at or now.isoformat(), "event": "import", "channel": "import"})
    if row.basis == "legitimate_interest":
        return with_interest(fields, interest_record(source=row.basis_source, at=now, channel="import"))
    return fields


_LEAD = Lead.__table__
_READ = ("id", "email", *PROFILE_FIELDS, "fit", "grade", "fields", "updated_at")  # what merging and grading a known lead need
# every column of a new lead the row does not fill: the table's defaults, as `Lead()` gives them
_NEW_LEAD = Lead(email="-").model_dump(exclude={"id", "email", "created_at", "updated_at"})


def _new_lead(row: LeadRow, now: datetime, scoring: ScoringConfig | None) -> dict[str, object]:
    """The values of a new lead's row: the row's cells, the table's defaults, timezone and language from the country."""
    profile = row.profile()
    if "timezone" not in profile and row.country in _COUNTRY_TIMEZONE:
        profile["timezone"] = _COUNTRY_TIMEZONE[row.country]
    if "language" not in profile and row.country in _COUNTRY_LANGUAGE:
        profile["language"] = _COUNTRY_LANGUAGE[row.country]
    values = {**_NEW_LEAD, **profile, "email": row.email, "created_at": now, "updated_at": now,
              "fields": _basis_fields({}, row, now)}
    if scoring is not None:
        values["fit"], values["grade"] = fit_and_grade(scoring, values)
    return values


def _changes(lead: dict[str, object], row: LeadRow) -> dict[str, object]:
    """The profile fields of a known lead this row changes: its filled cells, the first source kept."""
    changes = {name: value for name, value in row.profile().items() if lead[name] != value}
    if lead["source"]:
        changes.pop("source", None)  # first touch: the source that brought the lead stays, for the KPIs
    return changes


def _insert_new(session: Session, leads: list[dict[str, object]], dialect: str) -> set[str]:
    """Insert these new leads, skipping an address already there (another import's); the addresses inserted.

    On PostgreSQL the rows go as one array per column (`unnest`): a statement of a few parameters whatever the
    chunk's size (psycopg would rewrite each of 13,000 placeholders in Python, and never cache the statement)."""
    if not leads:
        return set()
    if dialect != "postgresql":
        statement = sqlite.insert(_LEAD).on_conflict_do_nothing(index_elements=["email"]).returning(_LEAD.c.email)
        return set(session.execute(statement, leads).scalars())
    names = [column.name for column in _LEAD.columns if column.name != "id"]
    documents = {name for name in names if isinstance(_LEAD.c[name].type, JSON)}  # sent as text: a list is no sub-array
    arrays = (cast(bindparam(name, type_=ARRAY(Text)), ARRAY(JSON)) if name in documents
              else bindparam(name, type_=ARRAY(_LEAD.c[name].type)) for name in names)
    rows = func.unnest(*arrays).table_valued(*names).render_derived()
    statement = (postgresql.insert(_LEAD).from_select(names, select(*(rows.c[name] for name in names)))
                 .on_conflict_do_nothing(index_elements=["email"]).returning(_LEAD.c.email))
    columns = {name: [json.dumps(lead[name]) if name in documents else lead[name] for lead in leads] for name in names}
    return set(session.execute(statement, columns).scalars())


def _among(column, emails: list[str], dialect: str):
    """`column IN (emails)`; on PostgreSQL one array parameter, not a placeholder per address (see _insert_new)."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, emails, type_=ARRAY(column.type)))
    return column.in_(emails)


def _known(session: Session, emails: list[str], dialect: str) -> dict[str, dict[str, object]]:
    """The leads of these addresses, by email, locked on PostgreSQL (in email order: two imports never deadlock)."""
    query = select(*(_LEAD.c[name] for name in _READ)).where(_among(_LEAD.c.email, emails, dialect)).order_by(_LEAD.c.email)
    if dialect == "postgresql":
        query = query.with_for_update()
    return {row["email"]: dict(row) for row in session.execute(query).mappings()}


def _listed(session: Session, emails: list[str], dialect: str) -> dict[str, str]:
    """The addresses of these on the suppression list, with their reason: such a new lead comes in suppressed."""
    listed = Suppression.__table__
    wanted = {address_hash(email): email for email in emails}  # by hash: a forgotten address is recognised too
    rows = session.execute(select(listed.c.email_hash, listed.c.reason).where(_among(listed.c.email_hash, list(wanted), dialect)))
    return {wanted[digest]: reason for digest, reason in rows}


def import_leads(session: Session, result: ImportResult, *, now: datetime, scoring: ScoringConfig | None = None,
                 batch_size: int = BATCH_SIZE, commit: bool = False,
                 progress: Callable[[int], None] | None = None) -> ImportSummary:
    """Upsert the good rows by email, `batch_size` at a time; known leads keep their score, stage and history.

    With `scoring`, fit and grade are computed as the rows are written, and a known lead whose grade changes
    wakes the waits on it. With `commit`, each chunk is committed as it is written (what `relance import`
    does: a long file holds no lock for long, and another import can run beside it); `progress(rows done)`
    is called after each chunk."""
    now = ensure_utc(now)
    totals: Counter[str] = Counter()
    for start in range(0, len(result.rows), batch_size):
        totals.update(_write_chunk(session, result.rows[start:start + batch_size], now=now, scoring=scoring))
        if commit:
            session.commit()
        if progress is not None:
            progress(min(start + batch_size, len(result.rows)))
    session.flush()
    session.expire_all()  # Lead objects the session holds read what was written
    return ImportSummary(**totals, skipped=result.rejected_rows)


def _write_chunk(session: Session, rows: list[LeadRow], *, now: datetime, scoring: ScoringConfig | None) -> Counter[str]:
    """Write one chunk of rows in the session's transaction: read, insert the new, update the changed, wake."""
    dialect = session.get_bind().dialect.name
    chunk = {row.email: row for row in sorted(rows, key=lambda row: row.email)}
    if dialect == "sqlite":  # take the write lock before reading: no other import writes between read and write
        session.execute(update(_LEAD).where(_LEAD.c.id == -1).values(id=_LEAD.c.id))
    known = _known(session, list(chunk), dialect)
    new = [_new_lead(row, now, scoring) for email, row in chunk.items() if email not in known]
    listed = _listed(session, [values["email"] for values in new], dialect) if new else {}
    for values in new:
        values["suppressed"] = listed.get(values["email"])  # on the suppression list: comes in suppressed, never mailed
    inserted = _insert_new(session, new, dialect)
    if raced := [values["email"] for values in new if values["email"] not in inserted]:
        known.update(_known(session, raced, dialect))  # another import inserted them since: merged as known leads
    counts = Counter(created=len(inserted), suppressed=sum(1 for email in inserted if listed.get(email)),
                     without_basis=sum(1 for values in new if values["email"] in inserted and basis_of(values["fields"]) is None))
    writes, regraded = [], []
    for email, lead in known.items():
        merged = {**lead, **_changes(lead, chunk[email]), "fields": _basis_fields(lead["fields"] or {}, chunk[email], now)}
        counts["without_basis"] += basis_of(merged["fields"]) is None
        if scoring is not None:
            merged["fit"], merged["grade"] = fit_and_grade(scoring, merged)
            if merged["grade"] != lead["grade"]:
                regraded.append(lead["id"])
        changed = any(merged[name] != lead[name] for name in PROFILE_FIELDS)
        if changed:
            merged["updated_at"] = now
        counts["updated" if changed else "unchanged"] += 1
        if merged != lead:
            writes.append({"_id": lead["id"], **{f"_{name}": merged[name] for name in _WRITE}})
    if writes:
        session.execute(_UPDATE, writes)
    if regraded:
        # an import has changed these leads: it must not wait for another's enrollments (see relance.wakes)
        wake_for_lead_changes(session, regraded, scoring=scoring, now=now, skip_locked=True)
    return counts


_WRITE = (*PROFILE_FIELDS, "fit", "grade", "fields", "updated_at")
# one executemany UPDATE for the changed leads of a chunk: every profile field, merged in Python under the lock
_UPDATE = update(_LEAD).where(_LEAD.c.id == bindparam("_id")).values({name: bindparam(f"_{name}") for name in _WRITE})


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


def read_suppression_list(data: bytes, *, reason: str) -> SuppressionFile:
    """`parse_suppression_list` of a file's bytes, decoded as a lead import's are (see `decode_csv`)."""
    text, note = decode_csv(data)
    if note is not None and note.level == "error":
        return SuppressionFile(problems=[note])
    result = parse_suppression_list(text, reason=reason)
    if note is not None:
        result.problems.insert(0, note)
    return result


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
