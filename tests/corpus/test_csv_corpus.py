"""Bad CSV files through `relance import`, on both backends: every problem named by row and column (row 1 is the
header, `file` the file itself), the good rows kept, the bad ones stored nowhere, never a traceback.

A case: an id, the file's bytes, the problems the answer must contain (`ROW: FIELD: words`), the addresses that must
be stored afterwards (nothing else), and the exit code: 0 when rows were imported, 1 when the file had none to import.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from relance.cli import app
from relance.plans import open_store
from relance.settings import get_settings
from relance.store.tables import Lead

GOOD = "lea.martin@acme.example"  # a good row kept beside the bad ones


@dataclass(frozen=True)
class Case:
    data: bytes
    says: tuple[str, ...]  # each `ROW: FIELD: words` must appear on stderr after the file's name
    stored: tuple[str, ...] = (GOOD,)
    exit_code: int = 0


def _csv(*lines: str, header: str = "email,first_name,company") -> bytes:
    return ("\n".join((header, *lines)) + "\n").encode("utf-8")


def _good_and(*bad: str, header: str = "email,first_name,company") -> bytes:
    """The good row (row 2), then the bad rows (from row 3)."""
    return _csv(f"{GOOD},Léa,ACME" if header == "email,first_name,company" else _GOOD_ROWS[header], *bad, header=header)


_GOOD_ROWS = {
    "email,company_revenue": f"{GOOD},12M",
    "email,country,timezone,language": f"{GOOD},FR,Europe/Paris,fr",
}

CASES: dict[str, Case] = {
    # --- the file itself: encodings, not a CSV at all, empty
    "latin-1 (Excel on Windows)": Case("email,first_name\nlea.martin@acme.example,Léa\n".encode("cp1252"),
                                       ("1: file: not UTF-8 (row 2 has the byte 0xE9): read as Windows-1252",)),
    "utf-16 with a BOM, tab-separated (Excel's Unicode text)": Case(
        codecs.BOM_UTF16_LE + "email\tfirst_name\nlea.martin@acme.example\tLéa\n".encode("utf-16-le"), ()),
    "utf-16 without a BOM": Case("email,first_name\nlea.martin@acme.example,Léa\n".encode("utf-16-be"), ()),
    "utf-8 with a BOM and semicolons (French Excel)": Case(
        codecs.BOM_UTF8 + "E-mail;Prénom;Société\nlea.martin@acme.example;Léa;ACME\n".encode("utf-8"), ()),
    "utf-16 that does not decode": Case(codecs.BOM_UTF16_LE + "email\n".encode("utf-16-le") + b"\x00\xd8",
                                        ("1: file: the file looks like UTF-16 text but byte",), (), 1),
    "an Excel workbook renamed .csv": Case(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)),
                                           ("1: file: this is an Excel workbook (.xlsx) or a zip archive, not a CSV",), (), 1),
    "a picture renamed .csv": Case(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(128, 256)),
                                   ("1: email: no email column in the header",), (), 1),
    "an empty file": Case(b"", ("1: header: the file is empty",), (), 1),
    "only a header": Case(b"email,first_name,company\n", ("1: header: no rows under the header",), (), 1),
    "no email column": Case(_csv("Léa,ACME", header="first_name,company"), ("1: email: no email column in the header",), (), 1),
    "the email column twice": Case(_csv(f"{GOOD},other@acme.example,Léa", header="email,email,first_name"),
                                   ("1: email: a second email column, ignored",)),
    # --- addresses
    "not an email": Case(_good_and("not-an-email,Paul,Globex"), ("3: email: 'not-an-email' is not an email address",)),
    "an empty email": Case(_good_and(",Paul,Globex"), ("3: email: empty: every row needs an email address",)),
    "a line break and a header in the email": Case(_good_and('"paul@globex.example\r\nbcc: victim@evil.example",Paul,Globex'),
                                                   ("3: email: 'paul@globex.example\\r\\nbcc: victim@evil.example' is not an email",)),
    "two addresses in one cell": Case(_good_and('"paul@globex.example,victim@evil.example",Paul,Globex'),
                                      ("3: email: 'paul@globex.example,victim@evil.example' is not an email address",)),
    "a NUL byte in the email": Case(_good_and("paul@globex.example\x00,Paul,Globex"),
                                    ("3: email: contains an invisible control character (U+0000): remove it",)),
    "a script tag as the email": Case(_good_and("<script>alert(1)</script>@x.example,Paul,Globex"),
                                      ("3: email: '<script>alert(1)</script>@x.example' is not an email address",)),
    "an email of 400 characters": Case(_good_and(f"{'p' * 380}@globex.example,Paul,Globex"),
                                       ("3: email: 395 characters, 320 at most",)),
    # --- other cells
    "a NUL byte in a name": Case(_good_and("paul@globex.example,Pa\x00ul,Globex"),
                                 ("3: first_name: contains an invisible control character (U+0000)",)),
    "a name of 5,000 characters": Case(_good_and(f"paul@globex.example,{'P' * 5000},Globex"),
                                       ("3: first_name: 5,000 characters, 200 at most",)),
    "a revenue of 5 billion, past 32 bits": Case(_good_and("paul@globex.example,5Md", header="email,company_revenue"), (),
                                                 (GOOD, "paul@globex.example")),
    "a revenue of 2 million billion": Case(_good_and("paul@globex.example,2000000Md", header="email,company_revenue"),
                                           ("3: company_revenue: 2 000 000 000 000 000 is more than the largest revenue relance can hold",)),
    "a revenue of 1e30": Case(_good_and("paul@globex.example,1e30", header="email,company_revenue"),
                              ("3: company_revenue: '1e30' is not an amount",)),
    "a revenue of 31 digits": Case(_good_and(f"paul@globex.example,1{'0' * 30}", header="email,company_revenue"),
                                   ("3: company_revenue: 1 000 000 000 000 000 000 000 000 000 000 is more than the largest revenue",)),
    "a negative revenue": Case(_good_and("paul@globex.example,-5", header="email,company_revenue"),
                               ("3: company_revenue: '-5' is not an amount",)),
    "a country that is none": Case(_good_and("paul@globex.example,Atlantide,Europe/Paris,fr", header="email,country,timezone,language"),
                                   ("3: country: 'Atlantide' is not a country",)),
    "timezone Mars/Olympus": Case(_good_and("paul@globex.example,FR,Mars/Olympus,fr", header="email,country,timezone,language"),
                                  ("3: timezone: 'Mars/Olympus' is not a timezone",)),
    "a language that is none": Case(_good_and("paul@globex.example,FR,Europe/Paris,klingon", header="email,country,timezone,language"),
                                    ("3: language: 'klingon' is not a language",)),
    "every cell of a row wrong": Case(
        _good_and("nope,Atlantide,Mars/Olympus,klingon", header="email,country,timezone,language"),
        ("3: email: 'nope' is not an email address", "3: country: 'Atlantide'", "3: timezone: 'Mars/Olympus'",
         "3: language: 'klingon'")),
    # --- the shape of a row
    "more cells than columns": Case(_good_and("paul@globex.example,Paul,Durand, Fils et Cie"),
                                    ("3: row: 4 cells for 3 columns (an unquoted comma or semicolon in a value?)",)),
    "a cell the CSV reader cannot read": Case(_good_and(f'paul@globex.example,Paul,"{"x" * 200_000}'),
                                              ("3: row: the CSV cannot be read from here on",)),
}


def _stored(db_url: str) -> set[str]:
    with Session(open_store(get_settings())) as session:
        return set(session.exec(select(Lead.email)).all())


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_csv_gets_an_answer_naming_row_and_column_and_keeps_the_good_rows(env, db_url, name: str) -> None:
    case = CASES[name]
    path = env / "leads.csv"
    path.write_bytes(case.data)

    result = CliRunner().invoke(app, ["import", str(path), "--now", "2026-03-02T09:00:00"])

    assert result.exit_code == case.exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for words in case.says:
        assert f"{path}:{words}" in result.stderr, result.stderr
    assert _stored(db_url) == set(case.stored)


FORMULAS = {"first_name": '=HYPERLINK("http://evil.example","Léa")', "last_name": "+33 1 23 45 67 89",
            "job_title": "-Directrice marketing", "company": "@SUM(A1:A9)", "source": "=cmd|' /C calc'!A0"}


def test_formula_cells_are_kept_as_the_text_they_are(env, db_url) -> None:
    """A spreadsheet would run them; relance stores text and never writes leads into a spreadsheet."""
    path = env / "leads.csv"
    header = "email," + ",".join(FORMULAS)
    cells = ",".join('"' + value.replace('"', '""') + '"' for value in FORMULAS.values())
    path.write_bytes(f"{header}\n{GOOD},{cells}\n".encode("utf-8"))

    result = CliRunner().invoke(app, ["import", str(path), "--now", "2026-03-02T09:00:00", "--basis", "legitimate_interest"])

    assert result.exit_code == 0 and result.stderr == "", result.output
    with Session(open_store(get_settings())) as session:
        lead = session.exec(select(Lead).where(Lead.email == GOOD)).one()
    assert {name: getattr(lead, name) for name in FORMULAS} == FORMULAS


# --------------------------------------------------------------------------- suppression lists

LISTED = "lea.martin@acme.example"  # Léa's address, on the list in every readable file


@dataclass(frozen=True)
class ListCase:
    data: bytes
    says: tuple[str, ...]  # each `ROW: FIELD: words` must appear on stderr after the file's name
    listed: tuple[str, ...] = (LISTED,)
    exit_code: int = 0


LIST_CASES: dict[str, ListCase] = {
    "latin-1 (Excel on Windows)": ListCase("email;reason;nom\nlea.martin@acme.example;manual;Léa Hervé\n".encode("cp1252"),
                                           ("1: file: not UTF-8 (row 2 has the byte 0xE9): read as Windows-1252",)),
    "latin-1, one address per line": ListCase("lea.martin@acme.example\nhervé@acme.example\n".encode("latin-1"),
                                              ("1: file: not UTF-8 (row 2 has the byte 0xE9)",
                                               "2: email: 'hervé@acme.example' is not an email address")),
    "utf-16 with a BOM, tab-separated (Excel's Unicode text)": ListCase(
        codecs.BOM_UTF16_LE + "email\treason\nlea.martin@acme.example\tmanual\n".encode("utf-16-le"), ()),
    "utf-16 big-endian with a BOM": ListCase(codecs.BOM_UTF16_BE + "email\nlea.martin@acme.example\n".encode("utf-16-be"), ()),
    "utf-16 without a BOM": ListCase("email\nlea.martin@acme.example\n".encode("utf-16-le"), ()),
    "utf-8 with a BOM": ListCase(codecs.BOM_UTF8 + "Courriel;Reason\nlea.martin@acme.example;manual\n".encode("utf-8"), ()),
    "utf-16 that does not decode": ListCase(codecs.BOM_UTF16_LE + "email\n".encode("utf-16-le") + b"\x00\xd8",
                                            ("1: file: the file looks like UTF-16 text but byte",), (), 1),
    "utf-32 that does not decode": ListCase(codecs.BOM_UTF32_LE + b"\xff\xff\xff\xff", ("1: file: the file looks like UTF-32",), (), 1),
    "an Excel workbook renamed .csv": ListCase(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)),
                                               ("1: file: this is an Excel workbook (.xlsx) or a zip archive, not a CSV",), (), 1),
    "random bytes": ListCase(bytes(range(128, 256)) * 4, ("1: email: no email column in the header",), (), 1),
}


def _listed() -> set[str]:
    from relance.store.tables import Suppression

    with Session(open_store(get_settings())) as session:
        return set(session.exec(select(Suppression.email)).all())


@pytest.mark.parametrize("name", list(LIST_CASES))
def test_a_suppression_list_is_decoded_as_a_lead_import_is_or_refused_in_one_line(env, db_url, name: str) -> None:
    case = LIST_CASES[name]
    path = env / "do-not-mail.csv"
    path.write_bytes(case.data)

    result = CliRunner().invoke(app, ["suppress", "import", str(path), "--now", "2026-03-02T09:00:00"])

    assert result.exit_code == case.exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for words in case.says:
        assert f"{path}:{words}" in result.stderr, result.stderr
    assert _listed() == set(case.listed)
