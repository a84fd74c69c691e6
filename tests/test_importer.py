"""Lead import: every bad row named by row and column, good rows kept, upsert by email."""

from __future__ import annotations

import codecs
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session, func, select

from relance.importer import ImportSummary, import_leads, parse_amount, parse_leads_csv, read_leads_csv
from relance.store.tables import Lead

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
HEADER = "email,first_name,last_name,job_title,company,sector,company_revenue,country,timezone,language,source\n"


def _problems(text: str, source: str | None = None) -> list[str]:
    return [f"{p.level} {p}" for p in parse_leads_csv(text, source=source).problems]


# --------------------------------------------------------------------------- parsing


def test_bad_rows_are_named_by_spreadsheet_row_and_column() -> None:
    result = parse_leads_csv((DATA / "leads-bad-rows.csv").read_text(encoding="utf-8"), source=None)

    errors = [(p.row_number, p.field) for p in result.errors]
    assert errors == [(3, "email"), (4, "company_revenue"), (5, "email"), (6, "timezone")]
    messages = {p.row_number: p.message for p in result.errors}
    assert "'pas-une-adresse' is not an email address" in messages[3]
    assert "'douze millions' is not an amount" in messages[4]
    assert "every row needs an email address" in messages[5]
    assert "'Europe/Geneva' is not a timezone" in messages[6]
    assert result.rejected_rows == 4


def test_good_rows_are_kept_when_other_rows_are_bad() -> None:
    result = parse_leads_csv((DATA / "leads-bad-rows.csv").read_text(encoding="utf-8"), source=None)

    assert [row.email for row in result.rows] == ["camille.martin@altavo.example", "marie-eve.tremblay@fanoel.example"]
    quebec = result.rows[1]
    assert (quebec.first_name, quebec.company_revenue, quebec.language) == ("Marie-Ève", 350_000, "fr-CA")


def test_one_bad_cell_reports_every_bad_cell_of_that_row() -> None:
    problems = _problems(HEADER + "nope,A,B,CMO,X,saas,beaucoup,Francia,Mars/Olympus,fr,web\n")

    assert [p.split(":")[0] for p in problems] == ["error 2"] * 4
    assert [p.split(": ")[1] for p in problems] == ["email", "company_revenue", "country", "timezone"]


def test_duplicate_emails_are_merged_and_later_filled_cells_win() -> None:
    text = HEADER + (
        "Claire.Dubois@Brivel.example,Claire,Dubois,Chargée de marketing,Brivel,saas,2M,FR,Europe/Paris,fr,webinar\n"
        "lucas.moreau@brivel.example,Lucas,Moreau,CMO,Brivel,saas,2M,FR,Europe/Paris,fr,webinar\n"
        "claire.dubois@brivel.example,,,Directrice marketing,,,,,,,\n"
    )
    result = parse_leads_csv(text, source=None)

    assert [row.email for row in result.rows] == ["claire.dubois@brivel.example", "lucas.moreau@brivel.example"]
    claire = result.rows[0]
    assert (claire.first_name, claire.job_title, claire.source) == ("Claire", "Directrice marketing", "webinar")
    assert [(p.level, p.row_number, p.field) for p in result.problems] == [("info", 4, "email")]
    assert "already on row 2" in result.problems[0].message


def test_default_source_fills_only_rows_without_one_and_never_beats_a_duplicate() -> None:
    text = HEADER + (
        "a@x.example,,,,,,,,,,webinar\n"
        "a@x.example,Anne,,,,,,,,,\n"
        "b@x.example,Bruno,,,,,,,,,\n"
    )
    rows = parse_leads_csv(text, source="salon-vivatech").rows

    assert [(row.email, row.source) for row in rows] == [("a@x.example", "webinar"), ("b@x.example", "salon-vivatech")]


def test_unknown_columns_are_reported_once_on_the_header_row() -> None:
    text = "email,crm_id,first_name\n" + "".join(f"lead{n}@x.example,{n},Lead\n" for n in range(5))
    result = parse_leads_csv(text, source=None)

    assert _problems(text) == [
        "warning 1: crm_id: unknown column, ignored: known columns are email, first_name, last_name, job_title, "
        "company, sector, company_revenue, country, timezone, language, source, basis, basis_source, consent_wording, consent_at"
    ]
    assert len(result.rows) == 5


def test_blank_lines_still_count_as_spreadsheet_rows() -> None:
    text = HEADER + "a@x.example,,,,,,,,,,\n\n,,,,,,,,,,\nnot-an-email,,,,,,,,,,\n"

    assert _problems(text) == ["error 5: email: 'not-an-email' is not an email address"]


def test_a_row_with_more_cells_than_columns_is_left_out() -> None:
    text = "email,company\na@x.example,Durand, Fils et Cie\nb@x.example,Brivel\n"
    result = parse_leads_csv(text, source=None)

    assert [str(p) for p in result.problems] == [
        "2: row: 3 cells for 2 columns (an unquoted comma or semicolon in a value?): row left out"
    ]
    assert [row.email for row in result.rows] == ["b@x.example"]


def test_an_unreadable_record_stops_the_file_there_and_keeps_the_rows_before() -> None:
    text = "email,company\na@x.example,A\nb@x.example," + "x" * 200_000 + "\nc@x.example,C\n"
    result = parse_leads_csv(text, source=None)

    assert [(p.row_number, p.field) for p in result.problems] == [(3, "row")]
    assert "cannot be read from here on" in result.problems[0].message
    assert [row.email for row in result.rows] == ["a@x.example"]


def test_a_file_without_an_email_column_says_so_on_row_one() -> None:
    result = parse_leads_csv("prenom,nom\nAnne,Roux\n", source=None)

    assert result.rows == []
    assert [(p.row_number, p.field) for p in result.problems] == [(1, "email")]
    assert "no email column" in result.problems[0].message


def test_french_excel_export_with_semicolons_accents_and_aliases_is_understood() -> None:
    text = "\ufeffE-mail;Prénom;Nom;Société;Chiffre d'affaires;Pays\nZOE.ROUX@Delixo.example;Zoé;Roux;Delixo;1\u202f200\u202f000;France\n"
    result = parse_leads_csv(text, source=None)

    assert result.problems == []
    assert result.rows[0].model_dump() == {
        "email": "zoe.roux@delixo.example", "first_name": "Zoé", "last_name": "Roux", "job_title": None,
        "company": "Delixo", "sector": None, "company_revenue": 1_200_000, "country": "FR", "timezone": None,
        "language": None, "source": None, "basis": None, "basis_source": None, "consent_wording": None, "consent_at": None,
    }


@pytest.mark.parametrize(
    ("text", "euros"),
    [("12 000 000", 12_000_000), ("12_000_000", 12_000_000), ("1\u00a0200\u00a0000", 1_200_000), ("1'200'000", 1_200_000),
     ("200k", 200_000), ("12M", 12_000_000), ("1,5M", 1_500_000), ("1.5 M€", 1_500_000), ("2Md", 2_000_000_000),
     ("350 k€", 350_000), ("  ", None)],
)
def test_revenue_accepts_grouped_digits_and_k_m_md_suffixes(text: str, euros: int | None) -> None:
    assert parse_amount(text) == euros


@pytest.mark.parametrize("text", ["12.000.000", "1,5", "douze", "12 millions", "-5M", "5 USD"])
def test_revenue_rejects_what_it_cannot_read_unambiguously(text: str) -> None:
    with pytest.raises(ValueError, match="is not an amount"):
        parse_amount(text)


def test_email_sector_country_and_language_are_normalised() -> None:
    row = parse_leads_csv(HEADER + " Anna.Koch@Werke.EXAMPLE ,Anna,Koch,CMO,Werke,  Industrie ,5M,de,Europe/Berlin,DE_at,web\n",
                          source=None).rows[0]

    assert (row.email, row.sector, row.country, row.language) == ("anna.koch@werke.example", "industrie", "DE", "de-AT")


# --------------------------------------------------------------------------- importing


def _lead(session: Session, email: str) -> Lead:
    return session.exec(select(Lead).where(Lead.email == email)).one()


def test_import_creates_leads_and_fills_timezone_and_language_from_the_country(session: Session) -> None:
    text = HEADER + "anna.koch@werke.example,Anna,Koch,CMO,Werke,industrie,5M,DE,,,\nj@x.example,Jean,,,,,,CA,,,\n"
    summary = import_leads(session, parse_leads_csv(text, source="import-crm"), now=NOW)
    session.commit()

    assert summary == ImportSummary(created=2, updated=0, unchanged=0, skipped=0)
    anna = _lead(session, "anna.koch@werke.example")
    assert (anna.timezone, anna.language, anna.company_revenue, anna.source) == ("Europe/Berlin", "de", 5_000_000, "import-crm")
    assert (anna.stage, anna.score, anna.created_at) == ("lead", 0, NOW)
    # Canada spans six timezones: no guess, the table default stays
    assert _lead(session, "j@x.example").timezone == Lead.model_fields["timezone"].default


def test_reimport_updates_profile_without_resetting_score_or_stage(session: Session) -> None:
    first = HEADER + "claire@brivel.example,Claire,Dubois,Chargée de marketing,Brivel,saas,2M,FR,Europe/Paris,fr,webinar\n"
    import_leads(session, parse_leads_csv(first, source=None), now=NOW)
    lead = _lead(session, "claire@brivel.example")
    lead.score, lead.stage, lead.grade, lead.tags = 72, "mql", "B", ["webinar-2026"]
    session.add(lead)
    session.commit()

    later = NOW + timedelta(days=20)
    second = HEADER + "CLAIRE@brivel.example,,,Directrice marketing,,,25M,,,,linkedin-ads\n"
    summary = import_leads(session, parse_leads_csv(second, source=None), now=later)
    session.commit()

    assert summary == ImportSummary(created=0, updated=1, unchanged=0, skipped=0)
    session.expire_all()
    lead = _lead(session, "claire@brivel.example")
    assert (lead.job_title, lead.company_revenue, lead.first_name, lead.company) == ("Directrice marketing", 25_000_000, "Claire", "Brivel")
    assert (lead.score, lead.stage, lead.grade, lead.tags) == (72, "mql", "B", ["webinar-2026"])
    assert lead.source == "webinar"  # first touch stays for the "leads by source" KPI
    assert (lead.created_at, lead.updated_at) == (NOW, later)


def test_reimporting_the_same_file_changes_nothing(session: Session) -> None:
    parsed = parse_leads_csv((DATA / "leads-bad-rows.csv").read_text(encoding="utf-8"), source=None)
    import_leads(session, parsed, now=NOW)
    session.commit()

    again = import_leads(session, parsed, now=NOW + timedelta(days=1))
    session.commit()

    assert again == ImportSummary(created=0, updated=0, unchanged=2, skipped=4)
    assert len(session.exec(select(Lead)).all()) == 2


def _statements(session: Session, parsed, *, batch_size: int) -> tuple[ImportSummary, list[str]]:
    """What importing `parsed` did, and the first word of every SQL statement it sent."""
    statements: list[str] = []
    engine = session.get_bind()

    def listener(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", listener)
    try:
        summary = import_leads(session, parsed, now=NOW, batch_size=batch_size)
        session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return summary, statements


@pytest.mark.parametrize("size", [10, 100])
def test_import_sends_a_few_statements_per_chunk_whatever_its_size(session: Session, size: int) -> None:
    """Set-based: a chunk's known leads are read in one query, its new ones inserted in one statement, its changed ones
    updated in one statement (and, on SQLite, one statement takes the write lock): nothing per row."""
    known = HEADER + "".join(f"lead{n}@x.example,Lead{n},,,,,,FR,,,\n" for n in range(3 * size))
    import_leads(session, parse_leads_csv(known, source=None), now=NOW)
    session.commit()
    changed = "".join(f"lead{n}@x.example,Lead{n},,CMO,,,,FR,,,\n" for n in range(size))  # the first chunk: a new title
    new = "".join(f"new{n}@x.example,New{n},,,,,,BE,,,\n" for n in range(size))  # the fourth chunk: new leads
    text = HEADER + changed + "".join(f"lead{n}@x.example,Lead{n},,,,,,FR,,,\n" for n in range(size, 3 * size)) + new

    summary, statements = _statements(session, parse_leads_csv(text, source=None), batch_size=size)

    assert summary == ImportSummary(created=size, updated=size, unchanged=2 * size, skipped=0)
    lock = 4 if session.get_bind().dialect.name == "sqlite" else 0
    assert statements.count("SELECT") == 4 + 1  # each chunk's known leads, and which of the new ones are on the list
    assert statements.count("INSERT") == 1  # the new leads, all in the last chunk, in one statement
    assert statements.count("UPDATE") == lock + 1  # the changed leads, all in the first chunk, in one statement


def test_the_shipped_sample_leads_import_into_an_empty_database(session: Session) -> None:
    parsed = parse_leads_csv((Path(__file__).parents[1] / "relance" / "demo" / "leads.csv").read_text(encoding="utf-8"),
                             source=None)
    summary = import_leads(session, parsed, now=NOW)
    session.commit()

    assert summary.created == len(parsed.rows) >= 200
    assert session.exec(select(func.count()).select_from(Lead).where(Lead.stage == "lead")).one() == summary.created


# --------------------------------------------------------------------------- encodings, cells that could hurt


PEOPLE = "email,first_name,company\nzoe@x.example,Zoé,Société Générale €\n"


@pytest.mark.parametrize("data", [
    PEOPLE.encode("utf-8"), codecs.BOM_UTF8 + PEOPLE.encode("utf-8"), PEOPLE.encode("utf-16"),
    PEOPLE.encode("utf-16-le"), PEOPLE.encode("utf-16-be"), PEOPLE.encode("utf-32"),
], ids=["utf-8", "utf-8 BOM", "utf-16 BOM", "utf-16-le", "utf-16-be", "utf-32 BOM"])
def test_unicode_files_are_read_as_what_they_are_without_a_word(data: bytes) -> None:
    result = read_leads_csv(data, source=None)

    assert result.problems == []
    assert [(r.email, r.first_name, r.company) for r in result.rows] == [("zoe@x.example", "Zoé", "Société Générale €")]


def test_a_windows_1252_file_is_read_as_such_with_a_warning_naming_the_first_odd_row() -> None:
    data = ("email,first_name,company\nanne@x.example,Anne,ACME\n" + PEOPLE.split("\n", 1)[1]).encode("cp1252")

    result = read_leads_csv(data, source=None)

    assert [str(p) for p in result.problems] == [
        "1: file: not UTF-8 (row 3 has the byte 0xE9): read as Windows-1252 / Latin-1, what Excel writes on Windows; "
        "if accents look wrong, save the file as \"CSV UTF-8\""]
    assert result.problems[0].level == "warning"
    assert result.rows[1].company == "Société Générale €"


def test_a_latin_1_byte_windows_1252_leaves_undefined_is_decoded_and_its_control_character_named() -> None:
    result = read_leads_csv(b"email,first_name\nzoe@x.example,Zo\x81\xe9\n", source=None)

    assert result.problems[0].level == "warning" and "read as Windows-1252" in str(result.problems[0])
    assert result.rows == [] and str(result.problems[1]) == "2: first_name: 'Zo\\x81é' contains the control character U+0081: remove it"


def test_a_tab_separated_file_is_understood() -> None:
    assert [r.company for r in parse_leads_csv("email\tcompany\nzoe@x.example\tDurand, Fils et Cie\n", source=None).rows] == [
        "Durand, Fils et Cie"]


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://evil.example","x")', "+33 1 23 45 67 89", "-2", "@SUM(A1:A9)",
                                  "=1+2", "<script>alert(1)</script>"])
def test_a_cell_a_spreadsheet_would_run_is_kept_as_the_text_it_is(cell: str) -> None:
    quoted = '"' + cell.replace('"', '""') + '"'
    result = parse_leads_csv(f"email,first_name,job_title\nzoe@x.example,{quoted},{quoted}\n", source=None)

    assert result.problems == [] and (result.rows[0].first_name, result.rows[0].job_title) == (cell, cell)


@pytest.mark.parametrize(("cell", "message"), [
    ("Zo\x00é", "contains an invisible control character (U+0000): remove it"),
    ("Zo\x1bé", "contains an invisible control character (U+001B): remove it"),
    ("Z" * 201, "201 characters, 200 at most"),
])
def test_a_cell_with_a_control_character_or_too_long_is_refused_naming_it(cell: str, message: str) -> None:
    assert [str(p) for p in parse_leads_csv(f"email,first_name\nzoe@x.example,{cell}\n", source=None).errors] == [
        f"2: first_name: {message}"]


def test_a_name_with_line_breaks_and_tabs_is_one_line() -> None:
    row = parse_leads_csv('email,first_name\nzoe@x.example,"Zoé\r\n\tMarie"\n', source=None).rows[0]

    assert row.first_name == "Zoé Marie"


@pytest.mark.parametrize(("cell", "kept"), [("2147483648", 2_147_483_648), ("5Md", 5_000_000_000),
                                             ("1000000000000000", 10**15), ("1 000 000 Md", 10**15)])
def test_revenues_past_32_bits_up_to_the_cap_are_accepted(cell: str, kept: int) -> None:
    assert parse_leads_csv(f'email,company_revenue\nzoe@x.example,"{cell}"\n', source=None).rows[0].company_revenue == kept


def test_a_revenue_past_the_cap_is_refused() -> None:
    assert [str(p) for p in parse_leads_csv("email,company_revenue\nzoe@x.example,1000000000000001\n", source=None).errors] == [
        "2: company_revenue: 1 000 000 000 000 001 is more than the largest revenue relance can hold (1 000 000 000 000 000)"]


def test_bad_cells_never_reach_the_database_and_the_good_rows_do(session: Session) -> None:
    text = HEADER + ("zoe@x.example,Zoé,,,,,3000000Md,,,,\n" "nul@x.example,N\x00,,,,,,,,,\n" "ok@x.example,Ok,,,,,2Md,FR,,,\n")
    summary = import_leads(session, parse_leads_csv(text, source=None), now=NOW)
    session.commit()

    assert (summary.created, summary.skipped) == (1, 2)
    assert session.exec(select(Lead.email, Lead.company_revenue)).all() == [("ok@x.example", 2_000_000_000)]


def test_a_new_lead_on_the_suppression_list_comes_in_suppressed(session: Session) -> None:
    from relance.suppression import suppress

    suppress(session, email="zoe@x.example", reason="unsubscribed", source="test", now=NOW)
    summary = import_leads(session, parse_leads_csv(HEADER + "zoe@x.example,Zoé,,,,,,,,,\nok@x.example,Ok,,,,,,,,,\n",
                                                    source=None), now=NOW)
    session.commit()

    assert (summary.created, summary.suppressed) == (2, 1)
    assert dict(session.exec(select(Lead.email, Lead.suppressed)).all()) == {"zoe@x.example": "unsubscribed", "ok@x.example": None}


def test_an_import_with_scoring_grades_new_and_changed_leads(session: Session) -> None:
    from relance.scoring.config import ScoringConfig

    scoring = ScoringConfig.model_validate({"fit": {"job_title": {"(?i)directr": 30}, "country": {"FR": 10}},
                                            "grades": {"A": 40, "B": 30, "C": 10}})
    import_leads(session, parse_leads_csv(HEADER + "zoe@x.example,Zoé,,Stagiaire,,,,FR,,,\n", source=None), now=NOW,
                 scoring=scoring)
    assert session.exec(select(Lead.fit, Lead.grade)).one() == (10, "C")

    summary = import_leads(session, parse_leads_csv(HEADER + "zoe@x.example,,,Directrice,,,,,,,\n", source=None),
                           now=NOW + timedelta(days=1), scoring=scoring)
    session.commit()

    assert summary == ImportSummary(updated=1)
    assert session.exec(select(Lead.fit, Lead.grade, Lead.updated_at)).one() == (40, "A", NOW + timedelta(days=1))
