"""The `relance` command as a person uses it, with every setting from the environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relance.cli import app
from relance.settings import get_settings
from tests.basis import professional

ROOT = Path(__file__).resolve().parents[1]


def relance(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_validate_accepts_the_shipped_scenarios(env):
    result = relance("validate")
    assert result.exit_code == 0, result.output
    assert "3 scenario(s) valid" in result.output


def test_validate_reports_file_line_and_step_and_exits_1(env):
    broken = env / "scenarios" / "broken.yaml"
    broken.write_text(
        "scenario: broken\ntrigger: {event: downloaded}\nsteps:\n"
        "  - id: hello\n    send: nope\n    subjet: Bonjour\n"
        "  - id: later\n    wait: 3 jours\n",
        encoding="utf-8",
    )
    result = relance("validate")
    assert result.exit_code == 1
    assert f"{broken}:6:5: step hello: unknown key 'subjet' (did you mean 'subject'?)" in result.output
    problems = sum(1 for line in result.stdout.splitlines() if line.startswith(f"{broken}:"))
    assert f"{problems} problem(s) in 1 of 4 scenario file(s)" in result.stderr
    assert f"{broken}:8:" in result.output and "step later" in result.output


def test_import_keeps_good_rows_and_names_bad_ones(env):
    csv = env / "leads.csv"
    csv.write_text(
        "email,first_name,company,country\n"
        "lea.martin@acme.example,Léa,ACME,FR\n"
        "not-an-email,Paul,Globex,FR\n"
        "karim@initech.example,Karim,Initech,BE\n",
        encoding="utf-8",
    )
    result = relance("import", str(csv), "--source", "salon")
    assert result.exit_code == 0, result.output
    assert f"{csv}:3: email" in result.output  # stderr and stdout, interleaved
    shown = json.loads(relance("lead", "show", "lea.martin@acme.example", "--json").output)
    assert shown["company"] == "ACME" and shown["source"] == "salon" and shown["stage"] == "lead"


def test_an_event_enrolls_and_lead_show_lists_the_enrollment(env):
    (env / "l.csv").write_text("email,first_name\nlea@acme.example,Léa\n", encoding="utf-8")
    relance("import", str(env / "l.csv"))
    result = relance("event", "downloaded", "--lead", "lea@acme.example", "--prop", "asset=livre-blanc-leads")
    assert "entered 1 scenario(s)" in result.output
    again = relance("event", "downloaded", "--lead", "lea@acme.example", "--prop", "asset=livre-blanc-leads",
                    "--key", "k1")
    assert "entered 0 scenario(s)" in again.output  # reentry: never
    shown = json.loads(relance("lead", "show", "lea@acme.example", "--json").output)
    assert [(e["scenario"], e["status"], e["step_id"]) for e in shown["enrollments"]] == [("whitepaper-nurture", "active", "send-guide")]


def test_an_event_for_an_unknown_lead_is_a_clear_error(env):
    result = CliRunner().invoke(app, ["event", "page_visited", "--lead", "ghost@nowhere.example"])
    assert result.exit_code == 1
    assert "no lead with email 'ghost@nowhere.example'" in result.output


def test_schema_is_json_with_every_step_type(env, tmp_path):
    out = tmp_path / "schema.json"
    assert relance("schema", "--out", str(out)).exit_code == 0
    text = out.read_text()
    for key in ("wait_until", "on_timeout", "split", "exit_when", "grade_at_least"):
        assert f'"{key}"' in text


def test_simulate_prints_a_funnel_for_a_shipped_scenario(env):
    result = relance("simulate", "whitepaper-nurture", "--leads", "300", "--days", "30", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["totals"]["entered"] == 300


def test_validate_checks_scoring_yaml_too_with_lines(env):
    scoring = env / "scenarios" / "scoring.yaml"
    text = scoring.read_text(encoding="utf-8")
    scoring.write_text(text.replace("decay: {every: 30d, percent: 25}", "decay: {every: 30 jours, percent: 25}")
                       .replace("grades: {A: 70", "grades: {E: 10, A: 70"), encoding="utf-8")
    result = relance("validate")
    assert result.exit_code == 1
    lines = [l for l in result.output.splitlines() if l.startswith(str(scoring))]
    assert len(lines) == 2, result.output
    assert any(":9:" in l and "bad duration '30 jours'" in l for l in lines)
    assert any("key E is not allowed here: expected one of A, B, C, D" in l for l in lines)


def test_sales_answers_from_the_command_line_and_a_refusal_for_a_closed_handoff(env):
    from datetime import datetime, timezone

    from sqlmodel import Session

    from relance.plans import open_store
    from relance.sales import open_handoff
    from relance.scoring.config import ScoringConfig
    from relance.store.repo import upsert_lead

    engine = open_store(get_settings())
    with Session(engine) as session:
        lead = upsert_lead(session, email="lea@acme.example", now=datetime.now(timezone.utc), fields=professional())
        open_handoff(session, lead, scoring=ScoringConfig(), now=datetime.now(timezone.utc), source="test")
        session.commit()
    result = relance("sales", "later", "lea@acme.example", "--until", "2099-01-15", "--by", "karim@example.com")
    assert result.exit_code == 0 and "hand-off later until 2099-01-15" in result.output
    refused = CliRunner().invoke(app, ["sales", "accept", "lea@acme.example"])
    assert refused.exit_code == 1 and "is closed: later" in refused.output
    shown = json.loads(relance("lead", "show", "lea@acme.example", "--json").output)
    assert shown["stage"] == "later" and shown["handoffs"][0]["answered_by"] == "karim@example.com"


def test_costs_and_the_report_from_the_command_line(env):
    (env / "l.csv").write_text("email,first_name,source\na@x.example,A,salon\nb@x.example,B,salon\n", encoding="utf-8")
    relance("import", str(env / "l.csv"))
    assert relance("cost", "add", "salon", "1000", "--margin", "3000").exit_code == 0
    figures = json.loads(relance("report", "--json").output)
    assert figures["economics"]["by_source"]["salon"]["cost_per_lead"] == 500.0
    assert figures["economics"]["total"]["roi"] == 2.0
    table = relance("report")
    assert table.exit_code == 0 and "Funnel" in table.output and "Economics" in table.output


def test_preview_fills_a_template_with_a_stored_lead_and_the_subject_of_the_step_that_sends_it(env):
    (env / "l.csv").write_text("email,first_name,company\nkarim@initech.example,Karim,Initech\n", encoding="utf-8")
    relance("import", str(env / "l.csv"))
    result = relance("preview", "whitepaper-followup", "--lead", "karim@initech.example")
    assert result.exit_code == 0, result.output
    assert "Subject: Karim, votre livre blanc" in result.output
    assert "chez Initech" in result.output and "subject from whitepaper-nurture/send-guide" in result.output
    assert "Lire le livre blanc (https://relance.example/ressources/livre-blanc-leads)" in result.output
    page = env / "preview.html"
    assert relance("preview", "whitepaper-followup", "--out", str(page)).exit_code == 0
    html = page.read_text(encoding="utf-8")
    assert "Léa" in html and "<html" in html and "{{" not in html  # the sample lead, fully rendered
    assert not (env / "outbox").exists()  # a preview sends nothing


def test_preview_of_the_sample_lead_shows_this_accounts_address_and_sender_and_prints_with_out(env, monkeypatch):
    monkeypatch.setenv("RELANCE_POSTAL_ADDRESS", "Ma Société, 1 place Bellecour, 69002 Lyon")
    monkeypatch.setenv("RELANCE_FROM", "Équipe Ventes <ventes@masociete.example>")
    get_settings.cache_clear()
    page = env / "preview.html"

    result = relance("preview", "whitepaper-followup", "--out", str(page))

    assert result.exit_code == 0, result.output
    assert "Subject: Léa, votre livre blanc" in result.output  # the subject and text part, HTML to the file as well
    assert "Ma Société, 1 place Bellecour, 69002 Lyon" in result.output
    html = page.read_text(encoding="utf-8")
    assert "Ma Société, 1 place Bellecour, 69002 Lyon" in html and "10 rue de la Paix" not in html


def test_a_tick_with_a_bad_now_is_refused_before_prefect_starts(env):
    result = CliRunner().invoke(app, ["tick", "--now", "yesterday"])

    assert result.exit_code == 2 and "'yesterday' is not an ISO date/time" in result.output
    assert "Traceback" not in result.output and "Prefect" not in result.output


def test_preview_names_what_is_missing(env):
    unknown = CliRunner().invoke(app, ["preview", "livre-blanc"])
    assert unknown.exit_code == 1 and "no template 'livre-blanc'" in unknown.output and "whitepaper-followup" in unknown.output
    ghost = CliRunner().invoke(app, ["preview", "whitepaper-followup", "--lead", "ghost@nowhere.example"])
    assert ghost.exit_code == 1 and "no lead with email 'ghost@nowhere.example'" in ghost.output


def test_the_report_names_messages_cut_off_mid_send_and_an_operator_settles_them(env):
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import select
    from sqlmodel import Session

    from relance.plans import open_store
    from relance.store.repo import upsert_lead
    from relance.store.tables import Outbox

    engine = open_store(get_settings())
    long_ago = datetime.now(timezone.utc) - timedelta(hours=3)
    with Session(engine) as session:
        lead = upsert_lead(session, email="lea@acme.example", now=long_ago, fields=professional())
        session.flush()
        rows = [Outbox(lead_id=lead.id, template="t", to_address=lead.email, status="sending", step_id=f"s{i}", created_at=long_ago)
                for i in range(2)]
        session.add_all(rows)
        session.commit()
        ids = [str(r.id) for r in rows]
    report = relance("report")
    assert "2 message(s) with an unknown outcome" in report.output and f"outbox {ids[0]}, {ids[1]}" in report.output
    assert relance("outbox", "resolve", ids[0], "--as", "pending", "--note", "SES never got it").exit_code == 0
    again = CliRunner().invoke(app, ["outbox", "resolve", ids[0], ids[1], "--as", "failed"])
    assert again.exit_code == 1 and f"outbox {ids[0]} is pending, not unknown: left as it is" in again.output
    with Session(engine) as session:
        settled = {r.id: (r.status, r.error) for r in session.exec(select(Outbox)).scalars()}
    assert settled[int(ids[0])] == ("pending", "outcome unknown; set to pending by an operator: SES never got it")
    assert settled[int(ids[1])][0] == "failed"
    assert CliRunner().invoke(app, ["outbox", "resolve", ids[1], "--as", "sent"]).exit_code == 2  # not a verdict
    engine.dispose()


def test_an_import_grades_the_leads_it_brings_and_leaves_the_others_alone(env):
    from sqlalchemy import update
    from sqlmodel import Session

    from relance.plans import open_store
    from relance.store.tables import Lead

    (env / "a.csv").write_text("email,first_name,job_title,country\nkarim@initech.example,Karim,Stagiaire,BR\n", encoding="utf-8")
    assert relance("import", str(env / "a.csv")).exit_code == 0
    engine = open_store(get_settings())
    with Session(engine) as session:  # as if graded by an older scoring.yaml
        session.execute(update(Lead).where(Lead.email == "karim@initech.example").values(grade="A"))
        session.commit()
    (env / "b.csv").write_text("email,first_name,job_title,country\nlea@acme.example,Léa,Directrice marketing,FR\n", encoding="utf-8")
    assert relance("import", str(env / "b.csv")).exit_code == 0
    grades = {e: json.loads(relance("lead", "show", e, "--json").output)["grade"] for e in ("karim@initech.example", "lea@acme.example")}
    assert grades["karim@initech.example"] == "A"  # not in this import: not regraded
    assert grades["lea@acme.example"] in ("A", "B", "C")  # a marketing director in France fits the profile
    engine.dispose()


# --------------------------------------------------------------------------- run from anywhere: missing folders

MISSING_HINT = "run relance from your project folder (the one with scenarios/ and templates/emails/), or set RELANCE_SCENARIOS_DIR"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """An empty folder as the working directory, no RELANCE_* setting: where an operator lands by mistake."""
    import os

    for name in [n for n in os.environ if n.startswith("RELANCE_")]:
        monkeypatch.delenv(name)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    get_settings.cache_clear()
    yield empty
    get_settings.cache_clear()


def test_tick_from_a_folder_without_scenarios_is_one_sentence_in_a_real_process(elsewhere):
    """The command as typed in a shell: exit 2 (the setup is wrong), what is missing, where it looked (absolute), what to do; no traceback."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "relance.cli", "tick"], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "FileNotFoundError" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: no folder of scenario files at {elsewhere / 'scenarios'} (not found): {MISSING_HINT} to the folder of "
        "your scenario files"]
    assert list(elsewhere.iterdir()) == []  # no database, no outbox left behind


@pytest.mark.parametrize("command", [
    ["tick"], ["serve"], ["simulate", "whitepaper-nurture"], ["flow", "decay"], ["flow", "sla"], ["flow", "reengage"],
    ["report"], ["event", "downloaded", "--lead", "lea@acme.example"], ["sales", "reject", "lea@acme.example", "--reason", "other"],
    ["preview", "whitepaper-followup"], ["demo", "--dir", "demo-run"], ["validate"],
], ids=" ".join)
def test_every_command_that_needs_the_scenarios_says_where_it_looked(elsewhere, command):
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback: a clean exit
    assert f"error: no folder of scenario files at {elsewhere / 'scenarios'} (not found): {MISSING_HINT}" in result.stderr
    assert list(elsewhere.iterdir()) == []  # refused before any database, outbox or demo folder is created


def test_a_scenarios_setting_that_points_nowhere_or_to_a_file_is_named(elsewhere, monkeypatch):
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(elsewhere / "nope"))
    result = CliRunner().invoke(app, ["tick"])
    assert result.exit_code == 2
    assert (f"error: RELANCE_SCENARIOS_DIR points to {elsewhere / 'nope'}, which does not exist: set it to the folder "
            "of your scenario files") in result.stderr
    (elsewhere / "a-file").write_text("scenario: x\n", encoding="utf-8")
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", "a-file")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert f"RELANCE_SCENARIOS_DIR points to {elsewhere / 'a-file'}, which is a file, not a folder" in result.stderr


def test_a_missing_templates_folder_is_one_sentence_not_one_problem_per_step(elsewhere, monkeypatch):
    shutil.copytree(ROOT / "scenarios", elsewhere / "scenarios")
    for command in (["tick"], ["validate"], ["serve"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.strip() == (
            f"error: no folder of email templates at {elsewhere / 'templates' / 'emails'} (not found): run relance from your "
            "project folder (the one with scenarios/ and templates/emails/), or set RELANCE_TEMPLATES_DIR to the folder of "
            "your email templates"), command
        assert result.stdout == ""
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(elsewhere / "tpl"))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 2
    assert f"RELANCE_TEMPLATES_DIR points to {elsewhere / 'tpl'}, which does not exist" in result.stderr


def test_validate_refuses_a_folder_without_scenario_files_and_a_path_that_is_not_there(elsewhere):
    (elsewhere / "scenarios").mkdir()
    (elsewhere / "scenarios" / "scoring.yaml").write_text("{}\n", encoding="utf-8")  # scoring alone is no scenario
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: no scenario files (*.yaml) in {elsewhere / 'scenarios'}"
    assert "ok" not in result.stdout
    tick = CliRunner().invoke(app, ["tick"])
    assert tick.exit_code == 1
    assert tick.stderr.strip() == f"error: no scenario files (*.yaml) in {elsewhere / 'scenarios'}: nothing to tick"
    missing = CliRunner().invoke(app, ["validate", "drafts/welcome.yaml"])
    assert missing.exit_code == 1
    assert missing.stderr.strip() == f"error: no such file or folder: {elsewhere / 'drafts' / 'welcome.yaml'}"


@pytest.mark.parametrize("command", [["lead", "show", "a@b.example"], ["suppress", "list"], ["outbox", "resolve", "1", "--as", "failed"],
                                     ["outbox", "list"], ["outbox", "resend", "1"]])
def test_a_reading_command_in_the_wrong_folder_says_there_is_no_database_and_creates_none(elsewhere, command):
    result = CliRunner().invoke(app, command)

    assert result.exit_code == 2, result.output
    assert f"no database at {elsewhere / 'relance.db'}" in " ".join(result.output.split())
    assert list(elsewhere.iterdir()) == []


def test_a_said_later_event_with_a_bad_date_is_refused_in_one_sentence_and_stores_nothing(env):
    csv = env / "leads.csv"
    csv.write_text("email,first_name\nlea.martin@acme.example,Léa\n", encoding="utf-8")
    relance("import", str(csv))
    result = CliRunner().invoke(app, ["event", "said_later", "--lead", "lea.martin@acme.example", "--prop", "until=soon"])

    assert result.exit_code == 1 and "`until` must be an ISO date" in result.output and "'soon'" in result.output
    assert "Traceback" not in result.output
    assert json.loads(relance("lead", "show", "lea.martin@acme.example", "--json").output)["score_ledger"] == []


def test_preview_shows_relances_own_staff_templates_without_a_lead_footer(env):
    assert not (env / "templates" / "sales-handoff.mjml").exists()  # shipped with relance, not with the folder
    result = CliRunner().invoke(app, ["preview", "sales-handoff"])

    assert result.exit_code == 0, result.output
    assert "Un lead est prêt pour vous" in result.output
    assert "/u/preview" not in result.output  # staff mail: no unsubscribe footer added
    assert "Subject: Lead à contacter avant le " in result.output and "relance's staff email" in result.output


def test_preview_of_the_handoff_email_for_a_lead_shows_its_own_handoff(env):
    csv = env / "leads.csv"
    csv.write_text("email,first_name,last_name,company,job_title,sector,company_revenue,country\n"
                   "zoe@acme.example,Zoé,Roux,ACME,Directrice marketing,saas,20000000,FR\n", encoding="utf-8")
    relance("import", str(csv), "--now", "2026-03-02T09:00:00")
    never = CliRunner().invoke(app, ["preview", "sales-handoff", "--lead", "zoe@acme.example"])
    assert never.exit_code == 0 and "Zoé" in never.output  # never handed off: the sample hand-off, her profile
    relance("event", "demo_requested", "--lead", "zoe@acme.example", "--now", "2026-03-02T10:00:00")
    relance("event", "page_visited", "--lead", "zoe@acme.example", "--prop", "path=/tarifs", "--now", "2026-03-02T10:00:00")

    result = CliRunner().invoke(app, ["preview", "sales-handoff", "--lead", "zoe@acme.example"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Subject: Lead à contacter avant le 2026-03-04 10:00 UTC : Zoé Roux (ACME)" in text
    assert "+50 demo_requested" in text and "2026-03-02 10:00 demo_requested" in text


def test_lead_show_lists_the_deals_and_reads_temperature_from_this_folders_scoring(env):
    csv = env / "leads.csv"
    csv.write_text("email,first_name\nlea.martin@acme.example,Léa\n", encoding="utf-8")
    relance("import", str(csv), "--now", "2026-03-02T09:00:00")
    relance("event", "page_visited", "--lead", "lea.martin@acme.example", "--prop", "path=/blog/x", "--now", "2026-03-02T10:00:00")
    scoring = env / "scenarios" / "scoring.yaml"
    scoring.write_text(scoring.read_text(encoding="utf-8").replace("temperature: {hot: 60, warm: 30}",
                                                                   "temperature: {hot: 60, warm: 1}"), encoding="utf-8")
    assert relance("sales", "won", "lea.martin@acme.example", "--amount", "24000", "--margin", "9000", "--on", "2026-03-03",
                   "--now", "2026-03-04T09:00:00").exit_code == 0

    shown = json.loads(relance("lead", "show", "lea.martin@acme.example", "--json").output)
    assert shown["temperature"] == "warm"  # 1 point: warm by this folder's scoring.yaml (cold by the defaults)
    assert [(d["outcome"], d["kind"], d["amount"], d["margin"]) for d in shown["deals"]] == [("won", "new", 24000.0, 9000.0)]
    table = relance("lead", "show", "lea.martin@acme.example").output
    assert "Deals" in table and "won (new)" in table and "24,000" in table


def test_lead_show_never_takes_the_default_temperatures_for_a_broken_scoring_yaml(env):
    csv = env / "leads.csv"
    csv.write_text("email,first_name\nlea.martin@acme.example,Léa\n", encoding="utf-8")
    relance("import", str(csv), "--now", "2026-03-02T09:00:00")
    scoring = env / "scenarios" / "scoring.yaml"
    scoring.write_text(scoring.read_text(encoding="utf-8").replace("temperature: {hot: 60, warm: 30}",
                                                                   "temperature: {hot: 60, warm: lots}"), encoding="utf-8")
    shown = relance("lead", "show", "lea.martin@acme.example", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["temperature"] is None  # not "cold", the defaults' word
    assert "scoring.yaml" in shown.stderr and "relance validate" in shown.stderr
    table = relance("lead", "show", "lea.martin@acme.example").stdout
    assert "temperature" in table and "cold" not in table
