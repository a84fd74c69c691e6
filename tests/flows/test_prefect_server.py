"""The production path through prefect.yaml: a real Prefect server, `prefect deploy --all`, its scheduler on, a
process worker. The deployments it makes are the ones `relance deploy` makes (tests/flows/test_cockpit.py runs that
path, and the triggers); the runs come from the schedules, not from a request.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.prefect_stack import PROJECT, RELANCE, Stack, isolated_stack

pytestmark = pytest.mark.prefect_server

DEADLINE_S = 240  # a run not finished by then is stuck: fail with the logs
SCHEDULED_WITHIN_S = 60  # from `prefect deploy` to the scheduler's runs: its loops run every few seconds here
MIN_RUNS = 3  # PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS' default: the scheduler keeps at least this many ahead
DEPLOYMENTS = ["decay", "monthly-newsletter", "re-engagement", "reengage", "ses-events", "sla", "whitepaper-nurture"]
SCHEDULED = [name for name in DEPLOYMENTS if name != "ses-events"]  # its schedule is off in prefect.yaml: no queue
# The server log, read as records: a record starts with Prefect's "HH:MM:SS.mmm | LEVEL" or uvicorn's "LEVEL:",
# the lines after it (a traceback) belong to it. A record is an error when it says so, and the scheduler's when it
# names the scheduler's services or carries SQLAlchemy 2.1's "InvalidRequestError: Can't evaluate bulk DML
# statement", which every scheduler loop raised. Other records (a busy SQLite's 5xx, retried) are not counted.
LOG_RECORD = re.compile(r"^(\d\d:\d\d:\d\d\.\d+ \||(INFO|WARNING|ERROR|CRITICAL):)")
AN_ERROR = re.compile(r"Traceback|Error|\| ERROR|\| CRITICAL|^(ERROR|CRITICAL):", re.MULTILINE)
THE_SCHEDULERS = re.compile(r"schedule_(recent_)?deployments|services[/.]scheduler|InvalidRequestError|bulk DML")


def _scheduler_errors(stack: Stack) -> list[str]:
    """The lines of the server log's error records that come from the scheduler (see LOG_RECORD)."""
    log = stack.logs / "server.log"
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    records: list[list[str]] = [[]]
    for line in text.splitlines():
        if LOG_RECORD.match(line):
            records.append([])
        records[-1].append(line)
    return [
        line for record in records
        if AN_ERROR.search(body := "\n".join(record)) and THE_SCHEDULERS.search(body)
        for line in record
    ]


def _first_error(errors: list[str]) -> str:
    """The exception itself when the log has one (`sqlalchemy.exc.InvalidRequestError: ...`), else the first line."""
    raised = [line.strip() for line in errors if re.match(r"\s*[\w.]+(Error|Exception): ", line)]
    return (raised or errors)[0]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A server env of its own (tests/prefect_stack.py): no UI, no scheduler (a test may turn it on)."""
    with isolated_stack(tmp_path) as s:
        yield s


def test_the_servers_scheduler_creates_the_runs_and_a_worker_completes_one(stack: Stack) -> None:
    """`prefect deploy --all` of prefect.yaml, then nothing but the server's scheduler: it creates the runs of every
    deployment, and a run it created for a 15 s schedule is picked up by `prefect worker start` and completes. No
    run is created by hand, and the server logs no error (SQLAlchemy 2.1 made every scheduler loop raise)."""
    started = time.monotonic()
    stack.env.update(
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
        # The main loop runs every 60 s by default; the loop for just-updated deployments every 5 s.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
    )
    server = stack.start_server()
    stack.call("POST", "/work_pools/", {"name": "relance", "type": "process"})
    stack.run("deploy", "deploy", "--all")
    deployed = time.monotonic()
    deployments = {d["name"]: d for d in stack.call("POST", "/deployments/filter", {})}
    assert sorted(deployments) == DEPLOYMENTS
    assert deployments["whitepaper-nurture"]["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT)}}]
    # prefect.yaml and `relance deploy` make the same deployments: after `prefect deploy --all`, nothing to change
    checked = subprocess.run([*RELANCE, "deploy", "--dry-run"], cwd=PROJECT, env=stack.env, capture_output=True,
                             text=True, timeout=180)
    assert checked.returncode == 0 and "would be: 7 unchanged" in checked.stdout, checked.stdout + checked.stderr
    assert "prefect.yaml: up to date" in checked.stdout

    # 1. prefect.yaml's own schedules (600 s, hourly, two crons): the scheduler fills each one ahead.
    by_name = {d["id"]: name for name, d in deployments.items()}
    while True:
        if errors := _scheduler_errors(stack):
            pytest.fail(f"the scheduler logged an error: {_first_error(errors)}\n{stack.diagnosis()}")
        if server.poll() is not None:
            pytest.fail(f"prefect server exited with {server.returncode}\n{stack.diagnosis()}")
        runs = stack.call("POST", "/flow_runs/filter", {"limit": 200})
        counts = {name: 0 for name in DEPLOYMENTS}
        for run in runs:
            if run["auto_scheduled"] and run["state"]["type"] == "SCHEDULED":
                counts[by_name[run["deployment_id"]]] += 1
        if min(counts[name] for name in SCHEDULED) >= MIN_RUNS:
            break
        if time.monotonic() - deployed > SCHEDULED_WITHIN_S:
            pytest.fail(
                f"the scheduler created no runs for some deployments {SCHEDULED_WITHIN_S} s after `prefect deploy`: "
                f"scheduled runs per deployment {counts}\n{stack.diagnosis()}"
            )
        time.sleep(0.5)  # polling the server we started
    scheduled = time.monotonic()
    assert all(run["created_by"]["type"] == "SCHEDULE" for run in runs if run["auto_scheduled"])
    assert counts["ses-events"] == 0  # a schedule that is off creates no run
    nurture_runs = [r for r in runs if r["deployment_id"] == deployments["whitepaper-nurture"]["id"]]
    starts = sorted(r["expected_start_time"] for r in nurture_runs)
    assert len(starts) >= 6, starts  # every 10 minutes, at least an hour ahead (MIN_SCHEDULED_TIME)
    assert all(r["parameters"] == {"scenario": "whitepaper-nurture"} for r in nurture_runs)

    # 2. A schedule short enough to come due during the test, then a worker: the scheduler's run must complete.
    stack.run(
        "schedule", "deployment", "schedule", "create", "tick/whitepaper-nurture", "--interval", "15", "--replace", "-y"
    )
    nurture = stack.call("GET", f"/deployments/{deployments['whitepaper-nurture']['id']}")
    assert [s["schedule"]["interval"] for s in nurture["schedules"]] == [15.0]
    schedule_id = nurture["schedules"][0]["id"]
    worker = stack.start("worker", "worker", "start", "--pool", "relance", "--name", "test-worker")
    body = {"flow_runs": {"deployment_id": {"any_": [nurture["id"]]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
    done = None
    while done is None:
        if errors := _scheduler_errors(stack):
            pytest.fail(f"the scheduler logged an error: {_first_error(errors)}\n{stack.diagnosis()}")
        if worker.poll() is not None:
            pytest.fail(f"the worker exited with {worker.returncode}\n{stack.diagnosis()}")
        runs = [r for r in stack.call("POST", "/flow_runs/filter", body) if r["auto_scheduled"]]
        for run in runs:
            if run["state"]["type"] in ("FAILED", "CRASHED", "CANCELLED"):
                state = run["state"]
                pytest.fail(f"scheduled tick ended {state['name']}: {state.get('message')}\n{stack.diagnosis()}")
            if run["state"]["type"] == "COMPLETED":
                done = run
        if done is None and time.monotonic() - started > DEADLINE_S:
            states = [(r["expected_start_time"], r["state"]["name"]) for r in runs[:5]]
            pytest.fail(f"no scheduled tick completed after {DEADLINE_S} s; first runs {states}\n{stack.diagnosis()}")
        time.sleep(0.5)  # polling the runs the scheduler created
    finished = time.monotonic()

    assert done["created_by"]["type"] == "SCHEDULE" and done["created_by"]["id"] == schedule_id
    assert done["idempotency_key"].startswith("scheduled ")  # the scheduler's own key, not a manual run's
    assert done["name"] == "whitepaper-nurture" and done["parameters"] == {"scenario": "whitepaper-nurture"}
    assert done["work_pool_name"] == "relance"
    artifacts = stack.call(
        "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["tick-whitepaper-nurture"]}}}
    )
    assert done["id"] in [a["flow_run_id"] for a in artifacts]
    assert _scheduler_errors(stack) == [], stack.diagnosis()

    stack.stop()
    print(
        f"\nprefect scheduler test: scheduled {scheduled - deployed:.1f} s after deploy {counts}, "
        f"scheduled tick done {finished - scheduled:.1f} s later, total {time.monotonic() - started:.1f} s"
    )
