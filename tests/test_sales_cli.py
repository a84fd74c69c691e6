"""The sales side as a rep and a CRM use it: `relance sales ...` through typer's CliRunner and `/sales/...` through
FastAPI's TestClient, over a real database of each backend."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.api.app import create_app
from relance.cli import app
from relance.plans import open_store
from relance.settings import Settings, get_settings
from relance.store.tables import Handoff, Outbox
from relance.workspace import load_workspace

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-of-the-tests"
ZOE = "zoe@acme.example"


def relance(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _hot_zoe(env) -> datetime:
    """Zoé (grade A) imported, seeing the prices and requesting a demo: handed to claire (round-robin) at the wall
    clock's time (`relance event` records at the wall clock)."""
    (env / "l.csv").write_text("email,first_name,last_name,company,job_title,sector,company_revenue,country\n"
                               f"{ZOE},Zoé,Roux,ACME,Directrice marketing,saas,20000000,FR\n", encoding="utf-8")
    assert relance("import", str(env / "l.csv")).exit_code == 0
    at = datetime.now(timezone.utc)
    assert relance("event", "page_visited", "--lead", ZOE, "--prop", "path=/tarifs").exit_code == 0  # 10 points
    assert relance("event", "demo_requested", "--lead", ZOE).exit_code == 0  # 60: handed off
    return at


def _listed(*args: str) -> list[dict]:
    result = relance("sales", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_rep_lists_rejects_and_the_lead_is_not_handed_straight_back(env):
    start = _hot_zoe(env)
    [row] = _listed("--now", _iso(start + timedelta(hours=49)))
    assert (row["email"], row["company"], row["owner"], row["overdue"]) == (ZOE, "ACME", "claire@example.com", True)
    assert row["deadline_left_minutes"] < 0 and row["target_left_minutes"] < row["deadline_left_minutes"]
    table = relance("sales", "list", "--now", _iso(start + timedelta(hours=49)))
    assert "OVERDUE by" in table.output and "Zoé Roux" in table.output
    assert ZOE in table.output.split() and "…" not in table.output  # the email whole: the argument of every sales command
    assert _listed("--owner", "karim@example.com") == []
    assert _listed("--overdue", "--now", _iso(start + timedelta(hours=1))) == []

    rejected = relance("sales", "reject", ZOE, "--reason", "no-budget", "--note", "back in Q3", "--by", "claire@example.com",
                       "--now", _iso(start + timedelta(minutes=5)))
    assert rejected.exit_code == 0 and "hand-off rejected" in rejected.output
    assert "no automatic hand-off before " in rejected.output
    relance("event", "page_visited", "--lead", ZOE, "--prop", "path=/blog")
    assert _listed() == []  # cooling off: no new hand-off
    assert "no open hand-off" in relance("sales", "list").output
    figures = json.loads(relance("report", "--json").output)
    assert figures["sla"]["rejection_reasons"] == {"no-budget": 1}
    shown = json.loads(relance("lead", "show", ZOE, "--json").output)
    answered = datetime.fromisoformat(shown["handoffs"][0]["answered_at"])
    assert answered == datetime.fromisoformat(_iso(start + timedelta(minutes=5)))  # the virtual clock of --now


def test_reassign_from_the_command_line_and_lead_show_tells_it(env, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # the whole table on one line
    start = _hot_zoe(env)
    moved = relance("sales", "reassign", ZOE, "--to", "camille@example.com", "--by", "direction@example.com",
                    "--now", _iso(start + timedelta(minutes=30)))
    assert moved.exit_code == 0 and "now owned by camille@example.com" in moved.output
    assert [r["owner"] for r in _listed()] == ["camille@example.com"]
    shown = relance("lead", "show", ZOE)
    assert "Hand-offs" in shown.output
    assert "claire@example.com -> camille@example.com by direction@example.com" in " ".join(shown.output.split())
    assert "…" not in shown.output  # nothing cut in 80 columns
    data = json.loads(relance("lead", "show", ZOE, "--json").output)
    assert data["handoffs"][0]["reassignments"][0]["to"] == "camille@example.com"
    engine = open_store(get_settings())
    with Session(engine) as session:
        notes = session.exec(select(Outbox.to_address).where(Outbox.template == "sales-handoff").order_by(Outbox.id)).scalars().all()
    assert notes == ["claire@example.com", "camille@example.com"]

    relance("sales", "accept", ZOE, "--by", "camille@example.com")
    refused = CliRunner().invoke(app, ["sales", "reassign", ZOE, "--to", "karim@example.com"])
    assert refused.exit_code == 1 and f"{ZOE} has no open hand-off to reassign" in refused.output
    assert "Traceback" not in refused.output


def test_sales_commands_refuse_a_bad_now_naming_the_option(env):
    _hot_zoe(env)
    for command in (["reject", ZOE, "--reason", "no-budget"], ["accept", ZOE], ["later", ZOE], ["reassign", ZOE, "--to", "a@b.example"]):
        result = CliRunner().invoke(app, ["sales", *command, "--now", "tomorrow"])
        assert result.exit_code == 2 and "--now" in result.output, (command, result.output)
    result = CliRunner().invoke(app, ["sales", "list", "--now", "tomorrow"])
    assert result.exit_code == 2 and "--now" in result.output
    assert [r["owner"] for r in _listed()] == ["claire@example.com"]  # nothing answered


def test_later_with_a_virtual_clock(env):
    start = _hot_zoe(env)
    result = relance("sales", "later", ZOE, "--until", "2030-01-01", "--now", _iso(start))
    assert result.exit_code == 0 and "until 2030-01-01" in result.output
    assert relance("event", "page_visited", "--lead", ZOE, "--prop", "path=/tarifs").exit_code == 0  # sales-ready
    [row] = _listed()
    assert row["owner"] == "claire@example.com" and "later until 2030-01-01" in row["source"]


def test_validate_refuses_a_handoff_team_scoring_yaml_does_not_define(env):
    scoring = env / "scenarios" / "scoring.yaml"
    scoring.write_text(scoring.read_text(encoding="utf-8").replace(
        "sales: {owners: [claire@example.com, karim@example.com], manager: direction.ventes@example.com}",
        "sales:\n  owners: [claire@example.com, karim@example.com]\n  teams:\n"
        "    france: {owners: [claire@example.com], where: {country: [FR, BE, CH]}}\n"), encoding="utf-8")
    hot = env / "scenarios" / "hot.yaml"
    hot.write_text("scenario: hot\ntrigger: {event: webinar_attended}\nsteps:\n"
                   "  - id: to-sales\n    handoff: sales\n    team: frnce\n", encoding="utf-8")
    result = relance("validate")
    assert result.exit_code == 1
    assert (f"{hot}:6:5: step to-sales: `team: frnce` names no team of scoring.yaml `sales.teams` "
            "(did you mean 'france'?) (defined: france)") in result.output
    hot.write_text(hot.read_text(encoding="utf-8").replace("frnce", "france"), encoding="utf-8")
    assert relance("validate").exit_code == 0


def test_validate_names_a_bad_team_in_scoring_yaml_at_its_line(env):
    scoring = env / "scenarios" / "scoring.yaml"
    text = scoring.read_text(encoding="utf-8").replace(
        "sales: {owners: [claire@example.com, karim@example.com], manager: direction.ventes@example.com}",
        "sales:\n  owners: [claire@example.com]\n  teams:\n    france: {owners: [claire@example.com], where: {pays: FR}}\n")
    scoring.write_text(text, encoding="utf-8")
    result = relance("validate")
    assert result.exit_code == 1
    line = text.splitlines().index("    france: {owners: [claire@example.com], where: {pays: FR}}") + 1
    assert f"{scoring}:{line}:" in result.output and "pays" in result.output


# --------------------------------------------------------------------------- the API


@pytest.fixture
def api(engine, clock, tmp_path, db_url):
    settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key="k" * 32, api_token=TOKEN)
    workspace = load_workspace(settings)
    client = TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    form = {"type": "form_submitted", "email": ZOE, "properties": {
        "first_name": "Zoé", "company": "ACME", "job_title": "Directrice marketing", "sector": "saas",
        "company_revenue": 20000000, "country": "FR"}}
    assert client.post("/events", json=form, headers=auth).status_code == 200
    assert client.post("/events", json={"type": "demo_requested", "email": ZOE}, headers=auth).status_code == 200
    return client, auth, engine


def test_the_open_handoffs_through_the_api(api, clock):
    client, auth, _ = api
    assert client.get("/sales/handoffs").status_code == 401
    [row] = client.get("/sales/handoffs", headers=auth).json()
    assert (row["email"], row["owner"], row["overdue"], row["deadline_left_minutes"]) == (ZOE, "claire@example.com", False, 48 * 60)
    clock.advance(timedelta(hours=49))
    assert [r["email"] for r in client.get("/sales/handoffs", params={"overdue": True}, headers=auth).json()] == [ZOE]
    assert client.get("/sales/handoffs", params={"owner": "karim@example.com"}, headers=auth).json() == []


def test_reassign_through_the_api(api, clock):
    client, auth, engine = api
    ok = client.post(f"/sales/{ZOE}/reassign", json={"to": "karim@example.com", "by": "direction@example.com"}, headers=auth)
    assert ok.status_code == 200 and ok.json()["owner"] == "karim@example.com"
    same = client.post(f"/sales/{ZOE}/reassign", json={"to": "karim@example.com"}, headers=auth)
    assert same.status_code == 422 and same.json()["detail"][0]["loc"] == ["body", "to"]
    assert "already owned by karim@example.com" in same.json()["detail"][0]["msg"]
    assert client.post("/sales/ghost@x.example/reassign", json={"to": "karim@example.com"}, headers=auth).status_code == 404
    assert client.post(f"/sales/{ZOE}/reassign", json={"to": "k@x.example", "extra": 1}, headers=auth).status_code == 422
    assert client.post(f"/sales/{ZOE}/accept", json={"by": "karim@example.com"}, headers=auth).status_code == 200
    closed = client.post(f"/sales/{ZOE}/reassign", json={"to": "claire@example.com"}, headers=auth)
    assert closed.status_code == 409 and closed.json()["detail"] == f"{ZOE} has no open hand-off to reassign"
    with Session(engine) as session:
        [handoff] = session.exec(select(Handoff)).scalars().all()
    assert (handoff.owner, handoff.status) == ("karim@example.com", "accepted")
