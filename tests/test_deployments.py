"""The deployments a scenarios folder calls for (relance.deployments), and prefect.yaml kept in step with them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from relance.deployments import DUE_EVENT, prefect_yaml, scenario_resource, trigger_of, wanted
from relance.scenario.loader import load_scenario_text
from relance.scenario.plan import compile_scenario, content_hash
from relance.settings import Settings
from relance.workspace import load_workspace

PROJECT = Path(__file__).resolve().parents[1]
HEAD = "scenario: demo\ntrigger: {event: downloaded}\n"
STEPS = "steps:\n  - id: bump\n    score: +5\n"


def _workspace(folder: Path):
    return load_workspace(Settings(scenarios_dir=folder, templates_dir=PROJECT / "templates" / "emails"))


def _problems(text: str) -> list[str]:
    _, _, problems = load_scenario_text(text, "s.yaml")
    return [str(p) for p in problems]


def test_the_committed_prefect_yaml_is_the_one_the_shipped_scenarios_call_for() -> None:
    """prefect.yaml is the readable record of the deployments: it must not drift from scenarios/ (rewrite it with
    `relance deploy --yaml` after adding, removing or rescheduling a scenario)."""
    workspace = _workspace(PROJECT / "scenarios")
    expected = prefect_yaml(wanted(workspace, ses_queue_url=None), prefect_version=version("prefect"))
    assert (PROJECT / "prefect.yaml").read_text(encoding="utf-8") == expected, (
        "prefect.yaml differs from what scenarios/ calls for: run `relance deploy --yaml` and commit it")


def test_prefect_yaml_declares_one_tick_per_scenario_with_its_trigger_and_the_housekeeping(tmp_path: Path) -> None:
    record = yaml.safe_load(prefect_yaml(wanted(_workspace(PROJECT / "scenarios"), ses_queue_url=None), prefect_version="3.8.8"))
    by_name = {d["name"]: d for d in record["deployments"]}
    assert sorted(by_name) == ["decay", "monthly-newsletter", "re-engagement", "reengage", "ses-events", "sla",
                               "whitepaper-nurture"]
    nurture = by_name["whitepaper-nurture"]
    assert nurture["entrypoint"] == "flows/tick.py:tick" and nurture["parameters"] == {"scenario": "whitepaper-nurture"}
    assert nurture["schedules"] == [{"interval": 600, "active": True}]  # no `schedule:` in the file: every 10 minutes
    assert nurture["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert nurture["triggers"] == [{"type": "event", "enabled": True, "name": "whitepaper-nurture: work due now",
                                    "match": {"prefect.resource.id": "relance.scenario.whitepaper-nurture"},
                                    "expect": [DUE_EVENT], "posture": "Reactive", "threshold": 1, "within": 0}]
    assert by_name["ses-events"]["schedules"] == [{"interval": 60, "active": False}]  # no queue where it was written
    assert by_name["ses-events"]["entrypoint"] == "flows/ses_events.py:ses_events"
    assert "triggers" not in by_name["sla"] and by_name["sla"]["schedules"] == [{"interval": 3600, "active": True}]


def test_a_scenario_s_schedule_becomes_its_tick_s_and_a_broken_file_keeps_its_tick(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    shutil.copy(PROJECT / "scenarios" / "scoring.yaml", folder)
    (folder / "hourly.yaml").write_text(HEAD.replace("demo", "hourly") + "schedule: 1h\n" + STEPS)
    (folder / "mornings.yaml").write_text(HEAD.replace("demo", "mornings")
                                          + "schedule: {cron: '0 9 * * mon-fri', timezone: Europe/Paris}\n" + STEPS)
    (folder / "broken.yaml").write_text(HEAD.replace("demo", "broken") + "steps:\n  - id: x\n    wiat: 3d\n")
    found = {d.name: d for d in wanted(_workspace(folder), ses_queue_url="https://sqs.example/q")}
    assert found["hourly"].schedule == {"interval": 3600, "active": True}
    assert found["mornings"].schedule == {"cron": "0 9 * * mon-fri", "timezone": "Europe/Paris", "active": True}
    assert found["broken"].schedule == {"interval": 600, "active": True}  # its tick says in the UI why it does not run
    assert found["broken"].description == "Tick of scenarios/broken.yaml."
    assert found["ses-events"].schedule["active"] is True  # a queue is set: the drain runs every minute
    assert trigger_of(found["hourly"])["match"] == {"prefect.resource.id": scenario_resource("hourly")}
    assert trigger_of(found["sla"]) is None


def test_changing_only_the_schedule_starts_no_new_version_of_the_scenario() -> None:
    """The schedule says when the server ticks, not the path a lead takes: enrollments stay on their version."""
    plain, _, _ = load_scenario_text(HEAD + STEPS, "s.yaml")
    hourly, _, _ = load_scenario_text(HEAD + "schedule: 1h\n" + STEPS, "s.yaml")
    other, _, _ = load_scenario_text(HEAD + STEPS.replace("+5", "+6"), "s.yaml")
    assert hourly.schedule is not None
    assert content_hash(plain) == content_hash(hourly) != content_hash(other)
    assert compile_scenario(hourly).hash == compile_scenario(plain).hash


def test_a_bad_schedule_is_named_at_its_line() -> None:
    assert _problems(HEAD + "schedule: 30s\n" + STEPS) == [
        "s.yaml:3:1: bad duration '30s': expected a positive number and a unit, like 45m, 2h, 3d or 1w"]
    assert _problems(HEAD + "schedule: 0m\n" + STEPS)[0].startswith("s.yaml:3:1: bad duration '0m'")
    assert _problems(HEAD + "schedule: {cron: '0 9 * *'}\n" + STEPS) == [
        "s.yaml:3:12: bad cron '0 9 * *': expected five fields (minute hour day month weekday), like '0 9 * * mon-fri'"]
    assert _problems(HEAD + "schedule: {cron: '0 9 * * *', timezone: Europe/Pariss}\n" + STEPS) == [
        "s.yaml:3:31: unknown time zone 'Europe/Pariss': expected an IANA name such as Europe/Paris"]
    assert _problems(HEAD + "schedule: [10m]\n" + STEPS) == [
        "s.yaml:3:1: `schedule:` a schedule is a duration (10m, 1h) or {cron: '0 9 * * mon-fri', timezone: Europe/Paris}"]
    assert _problems(HEAD + "schedule: 1h\n" + STEPS) == []


def _deploy(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    clean.update(PREFECT_HOME=env.pop("home"), COLUMNS="200", **env)
    return subprocess.run([sys.executable, "-m", "relance.cli", "deploy", *args], cwd=PROJECT, env=clean,
                          capture_output=True, text=True, timeout=120)


def test_relance_deploy_without_a_server_says_what_to_set_in_one_line(tmp_path: Path) -> None:
    unset = _deploy("--dry-run", home=str(tmp_path / "home"))
    assert unset.returncode == 2 and "Traceback" not in unset.stderr
    assert "PREFECT_API_URL is not set: point it at the Prefect server" in unset.stderr
    gone = _deploy("--dry-run", home=str(tmp_path / "home"), PREFECT_API_URL="http://127.0.0.1:9/api")
    assert gone.returncode == 2 and "Traceback" not in gone.stderr, gone.stderr
    assert "the Prefect server at http://127.0.0.1:9/api could not be updated" in gone.stderr
    assert "prefect.yaml: up to date" in unset.stdout  # the record is checked before the server is asked
