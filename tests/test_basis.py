"""A lawful basis on every lead, from every door, and no marketing email without one (both backends).

Each door records where the lead came from and on what basis it may be mailed: `relance import` (a `basis` column,
or `--basis` / `--source` / `--wording`), `relance event` (`--prop basis=legitimate_interest`, or the consent
properties), `POST /events` (its `consent` and `legitimate_interest` objects). A real tick with the file transport
writes no email to a lead without a basis (its outbox row is skipped with the reason), still sends a transactional
one, and RELANCE_REQUIRE_BASIS=never turns the refusal off. `relance lead show` and the export show the basis.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.api.app import create_app
from relance.cli import app as cli
from relance.consent import BadBasis, basis_of, checked_basis, refusal
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import open_store, sync_scenarios
from relance.settings import Settings, get_settings
from relance.store.tables import Lead, Outbox
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.shipped import shipped_environment
from tests.units import committed

TOKEN = "s3cret-token-of-the-tests"
LEA = "lea@acme.example"  # comes with a basis
BOB = "bob@globex.example"  # comes without one
WORDING = "J'accepte de recevoir les contenus de Relance."


@pytest.fixture
def settings(tmp_path, monkeypatch, db_url) -> Settings:
    yield shipped_environment(tmp_path, monkeypatch, db_url, RELANCE_API_TOKEN=TOKEN, COLUMNS="250")
    get_settings.cache_clear()


def relance(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _fields(settings: Settings, email: str) -> dict:
    with Session(open_store(settings)) as session:
        return session.exec(select(Lead.fields).where(Lead.email == email)).scalars().one()


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "salon.csv"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the rules


def test_the_basis_rules_in_one_place():
    assert checked_basis("Legitimate interest") == "legitimate_interest" and checked_basis("consent") == "consent"
    with pytest.raises(BadBasis, match="'opt-in' is not a lawful basis: use consent or legitimate_interest"):
        checked_basis("opt-in")
    assert basis_of({}) is None and basis_of(None) is None
    # a consent recorded before the basis was kept is a basis; a withdrawn one is none
    granted = {"consent": {"granted": True, "source": "page", "wording": "Oui", "at": "2026-01-05T09:00:00+00:00"}}
    assert basis_of(granted)["basis"] == "consent"
    withdrawn = {"consent_history": [{**granted["consent"], "granted": False}], "consent": {**granted["consent"], "granted": False}}
    assert basis_of(withdrawn) is None
    assert refusal({}, marketing=True, require="marketing").startswith("no lawful basis: neither consent nor legitimate interest")
    assert refusal(withdrawn, marketing=True, require="marketing").startswith("no lawful basis: consent withdrawn (page,")
    assert refusal({}, marketing=False, require="marketing") is None  # transactional
    assert refusal({}, marketing=True, require="never") is None
    assert refusal(granted, marketing=True, require="marketing") is None


# --------------------------------------------------------------------------- the doors


def test_import_records_the_basis_of_columns_and_options_and_names_a_bad_row(settings, tmp_path):
    path = _csv(tmp_path, "email,first_name,basis,basis_source,consent_wording\n"
                          f"{LEA},Léa,consent,page salon,{WORDING}\n"                # 2: consent with its wording
                          "karim@initech.example,Karim,legitimate_interest,,\n"      # 3: its source: --source
                          "nina@initech.example,Nina,opt-in,,\n"                     # 4: no basis that is one
                          "omar@initech.example,Omar,consent,,\n"                    # 5: consent without its wording
                          f"{BOB},Bob,,,\n")                                         # 6: none: --basis fills it
    result = relance("import", str(path), "--source", "vivatech-2026", "--basis", "legitimate_interest",
                     "--now", "2026-03-02T09:00:00+00:00")
    assert result.exit_code == 0, result.output
    assert f"{path}:4: basis: 'opt-in' is not a lawful basis: use consent or legitimate_interest" in result.output
    assert f"{path}:5: consent_wording: a consent needs the wording the person accepted" in result.output

    lea = _fields(settings, LEA)
    assert lea["basis"] == {"basis": "consent", "source": "page salon", "wording": WORDING,
                            "at": "2026-03-02T09:00:00+00:00", "channel": "import"}
    assert lea["consent"]["granted"] is True and len(lea["consent_history"]) == 1  # the proof, kept as a consent record
    assert _fields(settings, "karim@initech.example")["basis"] == {
        "basis": "legitimate_interest", "source": "vivatech-2026", "at": "2026-03-02T09:00:00+00:00", "channel": "import"}
    assert _fields(settings, BOB)["basis"]["basis"] == "legitimate_interest"
    with Session(open_store(settings)) as session:  # the bad rows are left out, the others went on
        assert set(session.exec(select(Lead.email)).scalars()) == {LEA, BOB, "karim@initech.example"}

    again = relance("import", str(path), "--now", "2026-03-09T09:00:00+00:00")  # the same consent twice: one record
    assert again.exit_code == 0
    assert len(_fields(settings, LEA)["consent_history"]) == 1


def test_an_import_without_a_basis_invents_none_and_says_so(settings, tmp_path):
    path = _csv(tmp_path, f"email,first_name\n{BOB},Bob\n")
    result = relance("import", str(path), "--source", "salon")
    assert result.exit_code == 0, result.output
    assert "1 lead(s) of this file have no lawful basis" in result.output
    assert "basis" not in _fields(settings, BOB)
    shown = relance("lead", "show", BOB)
    assert "lawful basis" in shown.output and "none recorded: marketing emails are not sent" in shown.output


@pytest.mark.parametrize(("args", "option", "message"), [
    (("--basis", "opt-in"), "--basis", "'opt-in' is not a lawful basis"),
    (("--wording", "Oui"), "--wording", "a wording is a consent's"),
])
def test_a_bad_basis_option_is_refused_before_anything_is_read(settings, tmp_path, args, option, message):
    path = _csv(tmp_path, f"email\n{BOB}\n")
    result = relance("import", str(path), *args)
    assert result.exit_code == 2 and option in result.output and message in result.output
    assert not (tmp_path / "outbox").exists()


def test_a_consent_import_needs_its_wording_given_once_for_the_file(settings, tmp_path):
    path = _csv(tmp_path, f"email,source\n{LEA},webinar\n")
    assert relance("import", str(path), "--basis", "consent").exit_code == 1  # every row left out: nothing to import
    result = relance("import", str(path), "--basis", "consent", "--wording", WORDING)
    assert result.exit_code == 0, result.output
    assert _fields(settings, LEA)["basis"] | {"at": None} == {"basis": "consent", "source": "webinar", "wording": WORDING,
                                                              "at": None, "channel": "import"}


def test_relance_event_records_a_legitimate_interest_and_a_consent(settings):
    result = relance("event", "form_submitted", "--lead", BOB, "--prop", "basis=legitimate_interest",
                     "--prop", "basis_source=carte de visite")
    assert result.exit_code == 0, result.output
    assert _fields(settings, BOB)["basis"] | {"at": None} == {"basis": "legitimate_interest", "source": "carte de visite",
                                                              "at": None, "channel": "cli"}
    # a consent replaces the legitimate interest: it is the stronger proof; a later interest does not replace it
    assert relance("event", "form_submitted", "--lead", BOB, "--prop", "consent_source=page tarifs",
                   "--prop", f"consent_wording={WORDING}").exit_code == 0
    assert relance("event", "form_submitted", "--lead", BOB, "--prop", "basis=legitimate_interest",
                   "--prop", "form=salon").exit_code == 0
    basis = _fields(settings, BOB)["basis"]
    assert (basis["basis"], basis["source"], basis["wording"]) == ("consent", "page tarifs", WORDING)
    # a withdrawal removes it (and suppresses)
    assert relance("event", "form_submitted", "--lead", BOB, "--prop", "consent_source=préférences",
                   "--prop", "consent_wording=Plus d'emails", "--prop", "consent_granted=withdrawn").exit_code == 0
    fields = _fields(settings, BOB)
    assert "basis" not in fields and basis_of(fields) is None
    # and a legitimate interest after it records nothing: the person objected
    assert relance("event", "form_submitted", "--lead", BOB, "--prop", "basis=legitimate_interest").exit_code == 0
    assert basis_of(_fields(settings, BOB)) is None


@pytest.mark.parametrize(("props", "message"), [
    (("basis=optin",), "basis: 'optin' is not a lawful basis"),
    (("basis=consent",), "basis consent is recorded from the consent itself"),
    (("basis_source=salon",), "basis_source is given without basis"),
])
def test_relance_event_refuses_a_bad_basis_in_one_line(settings, props, message):
    result = relance("event", "form_submitted", "--lead", BOB, *(f"--prop={p}" for p in props))
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    with Session(open_store(settings)) as session:
        assert session.exec(select(Lead).where(Lead.email == BOB)).first() is None  # nothing of it is stored


def test_post_events_records_consent_and_legitimate_interest(settings, clock):
    api = TestClient(create_app(settings, engine=open_store(settings), workspace=load_workspace(settings), clock=clock))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = api.post("/events", headers=auth, json=[
        {"type": "form_submitted", "email": LEA, "consent": {"source": "page webinar", "wording": WORDING}},
        {"type": "form_submitted", "email": BOB, "legitimate_interest": {"source": "salon vivatech"}},
    ])
    assert answer.status_code == 200, answer.text
    assert _fields(settings, LEA)["basis"]["basis"] == "consent"
    assert _fields(settings, LEA)["basis"]["channel"] == "api"
    assert _fields(settings, BOB)["basis"]["source"] == "salon vivatech"
    bad = api.post("/events", headers=auth, json={"type": "form_submitted", "email": "x@initech.example",
                                                  "properties": {"basis": "opt-in"}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", 0, "properties", "basis"]
    missing = api.post("/events", headers=auth, json={"type": "form_submitted", "email": "x@initech.example",
                                                      "legitimate_interest": {"source": ""}})
    assert missing.status_code == 422
    document = api.get("/openapi.json").json()["components"]["schemas"]
    assert "legitimate_interest" in document["EventIn"]["properties"] and "LegitimateInterest" in document
    export = api.get(f"/leads/{BOB}/export", headers=auth).json()
    assert export["basis"]["basis"] == "legitimate_interest"


def test_lead_show_and_export_print_the_basis(settings):
    relance("event", "form_submitted", "--lead", LEA, "--prop", f"consent_wording={WORDING}", "--prop", "consent_source=page webinar",
            "--now", "2026-01-05T09:00:00+00:00")
    shown = relance("lead", "show", LEA)
    assert "lawful basis" in shown.output and "consent (page webinar, 2026-01-05 09:00 UTC" in shown.output
    assert json.loads(relance("lead", "show", LEA, "--json").output)["basis"]["basis"] == "consent"
    assert json.loads(relance("lead", "export", LEA).output)["basis"]["source"] == "page webinar"


# --------------------------------------------------------------------------- the refusal at send time


def _two_leads_download(settings, clock, tmp_path) -> None:
    """Léa imported on legitimate interest, Bob without a basis; both download the white paper."""
    path = _csv(tmp_path, f"email,first_name,basis,basis_source\n{LEA},Léa,legitimate_interest,salon\n{BOB},Bob,,\n")
    assert relance("import", str(path)).exit_code == 0
    workspace = load_workspace(settings)
    now = clock.now()
    committed(open_store(settings), sync_scenarios, workspace=workspace, now=now)
    committed(open_store(settings), ingest_events, workspace=workspace, now=now,
              events=[IncomingEvent("downloaded", e, now, {"asset": "livre-blanc-leads"}) for e in (LEA, BOB)])


def _tick(settings, clock):
    settings = Settings()  # as the environment has it now
    return run_tick_inline(open_store(settings), settings, scenario="whitepaper-nurture", now=clock.now(),
                           workspace=load_workspace(settings), templates=TemplateLibrary(settings.templates_dir))


def _rows(settings) -> dict[str, Outbox]:
    with Session(open_store(settings)) as session:
        return {row.to_address: row for row in session.exec(select(Outbox)).scalars()}


def _written_to(tmp_path) -> list[str]:
    return sorted(line.split(":", 1)[1].strip() for eml in (tmp_path / "outbox").glob("*.eml")
                  for line in eml.read_text(errors="replace").splitlines() if line.startswith("To:"))


def test_a_marketing_email_to_a_lead_without_a_basis_is_skipped_with_the_reason(settings, clock, tmp_path):
    _two_leads_download(settings, clock, tmp_path)
    report = _tick(settings, clock)
    rows = _rows(settings)
    assert rows[LEA].status == "sent"
    assert rows[BOB].status == "skipped"
    assert rows[BOB].error == ("no lawful basis: neither consent nor legitimate interest is recorded for this lead "
                               "(import it with --basis, or record its consent with a form)")
    assert _written_to(tmp_path) == [LEA]  # nothing in the outbox folder for Bob
    assert (report.sent, report.skipped) == (1, 1)  # counted as skipped


def test_a_transactional_email_to_a_lead_without_a_basis_goes(settings, clock, tmp_path):
    scenario = Path(settings.scenarios_dir) / "whitepaper-nurture.yaml"
    text = scenario.read_text(encoding="utf-8")
    scenario.write_text(text.replace("    send: whitepaper-followup\n",
                                     "    send: whitepaper-followup\n    transactional: the white paper the lead asked for\n"),
                        encoding="utf-8")
    _two_leads_download(settings, clock, tmp_path)
    _tick(settings, clock)
    rows = _rows(settings)
    assert (rows[BOB].marketing, rows[BOB].status) == (False, "sent")
    assert _written_to(tmp_path) == [BOB, LEA]


def test_require_basis_never_turns_the_refusal_off(settings, clock, tmp_path, monkeypatch):
    monkeypatch.setenv("RELANCE_REQUIRE_BASIS", "never")
    _two_leads_download(settings, clock, tmp_path)
    _tick(settings, clock)
    assert {a: r.status for a, r in _rows(settings).items()} == {LEA: "sent", BOB: "sent"}
    assert _written_to(tmp_path) == [BOB, LEA]


def test_a_bad_require_basis_setting_is_named(monkeypatch):
    from relance.settings import SettingError, read_settings

    monkeypatch.setenv("RELANCE_REQUIRE_BASIS", "sometimes")
    with pytest.raises(SettingError, match="RELANCE_REQUIRE_BASIS='sometimes' cannot be used: expected one of marketing, never"):
        read_settings()

